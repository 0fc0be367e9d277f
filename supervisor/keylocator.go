package supervisor

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// keyLocator finds the line on which a key is defined.
//
// toml's parser records a position for every key, but MetaData does not
// export it: it surfaces only in the ParseError of a value whose
// Unmarshaler fails. So to locate apps.web.version the source is decoded
// again into a throwaway struct with nothing but the field path apps → web
// → version, whose leaf always fails; the ParseError then carries the
// parser's own position for exactly that key. This stays right where a text
// scan would have to understand multi-line strings and arrays, inline
// tables, dotted and quoted keys. Since toml falls back to a
// case-insensitive match, every case variant of a path element present in
// the file gets a field of its own that absorbs it, and the error's LastKey
// must name the key: anything else gives 0, never a wrong line.
type keyLocator struct {
	src   string
	keys  []toml.Key // every key of the document
	cache map[string]int
}

// locateProbe is the leaf of a locating decode: it fails wherever it is.
type locateProbe struct{}

var errLocated = errors.New("located")

func (locateProbe) UnmarshalTOML(any) error { return errLocated }

// line returns the 1-based line of key, or 0 when it cannot be found (an
// implicit table, a key inside an array of tables).
func (l *keyLocator) line(key toml.Key) int {
	s := key.String()
	if n, ok := l.cache[s]; ok {
		return n
	}
	n := l.find(key)
	if l.cache == nil {
		l.cache = make(map[string]int)
	}
	l.cache[s] = n
	return n
}

func (l *keyLocator) find(key toml.Key) int {
	t := reflect.TypeFor[locateProbe]()
	for i := len(key) - 1; i >= 0; i-- {
		tag, ok := fieldTag(key[i])
		if !ok {
			return 0
		}
		fields := []reflect.StructField{{Name: "Target", Type: t, Tag: tag}}
		for j, variant := range l.caseVariants(key[:i+1]) {
			tag, ok := fieldTag(variant)
			if !ok {
				return 0
			}
			fields = append(fields, reflect.StructField{
				Name: fmt.Sprintf("Variant%d", j),
				Type: reflect.TypeFor[toml.Primitive](),
				Tag:  tag,
			})
		}
		t = reflect.StructOf(fields)
	}
	_, err := toml.Decode(l.src, reflect.New(t).Interface())
	var pe toml.ParseError
	if !errors.As(err, &pe) || pe.Message != errLocated.Error() || pe.LastKey != key.String() ||
		pe.Position.Start < 0 || pe.Position.Start > len(l.src) {
		return 0
	}
	// Position.Line is where the lexer stood after the value, which for a
	// multi-line string is its last line; Start is where the value begins,
	// and TOML puts that on the line of its key.
	line := 1 + strings.Count(l.src[:pe.Position.Start], "\n")
	text := l.src[strings.LastIndexByte(l.src[:pe.Position.Start], '\n')+1:]
	if i := strings.IndexByte(text, '\n'); i >= 0 {
		text = text[:i]
	}
	if !strings.Contains(text, key[len(key)-1]) {
		return 0 // a quoted key with escapes, say: no line rather than a wrong one
	}
	return line
}

// caseVariants returns the names in the document that share key's parent
// and differ from its last element only in case. Implicit tables count:
// MetaData.Keys omits the "apps" of a lone [apps.web], so names are taken
// from every key's prefix; missing one, the probe would absorb it too, and
// which of the two failed first would depend on map order.
func (l *keyLocator) caseVariants(key toml.Key) []string {
	parent, last := key[:len(key)-1], key[len(key)-1]
	var variants []string
	for _, k := range l.keys {
		if len(k) < len(key) || !slices.Equal(k[:len(parent)], parent) {
			continue
		}
		if name := k[len(key)-1]; name != last && strings.EqualFold(name, last) && !slices.Contains(variants, name) {
			variants = append(variants, name)
		}
	}
	return variants
}

// fieldTag returns the struct tag that makes toml match exactly name. toml
// splits tags at commas and treats "" and "-" specially: such names cannot
// be expressed.
func fieldTag(name string) (reflect.StructTag, bool) {
	if name == "" || name == "-" || strings.Contains(name, ",") {
		return "", false
	}
	return reflect.StructTag("toml:" + strconv.Quote(name)), true
}

// keyLines is a keyLocator over the file c was read from, for a problem
// found after the load (a reload that changes a key it cannot).
func (c *Config) keyLines() *keyLocator {
	l := &keyLocator{src: string(c.src)}
	var tree map[string]any
	if md, err := toml.Decode(l.src, &tree); err == nil {
		l.keys = md.Keys()
	}
	return l
}
