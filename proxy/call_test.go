package proxy

import (
	"slices"
	"testing"
)

func TestCallListInsertByArrival(t *testing.T) {
	tests := []struct {
		name    string
		inserts []uint64
		want    []uint64
	}{
		{"in order", []uint64{1, 2, 3}, []uint64{1, 2, 3}},
		{"to the front", []uint64{2, 3, 1}, []uint64{1, 2, 3}},
		{"in the middle", []uint64{1, 4, 2, 3}, []uint64{1, 2, 3, 4}},
		{"reversed", []uint64{5, 4, 3, 2, 1}, []uint64{1, 2, 3, 4, 5}},
		{"mixed", []uint64{1, 5, 3, 4, 2, 6, 0}, []uint64{0, 1, 2, 3, 4, 5, 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l callList
			for _, s := range tt.inserts {
				l.insertByArrival(&call{seq: s})
			}
			if l.n != len(tt.want) {
				t.Fatalf("n = %d, want %d", l.n, len(tt.want))
			}
			var got, back []uint64
			for c := l.head; c != nil; c = c.next {
				got = append(got, c.seq)
			}
			for c := l.tail; c != nil; c = c.prev {
				back = append([]uint64{c.seq}, back...)
			}
			if !slices.Equal(got, tt.want) || !slices.Equal(back, tt.want) {
				t.Errorf("list = %v (backwards %v), want %v", got, back, tt.want)
			}
			for c := l.popFront(); c != nil; c = l.popFront() {
				if c.list != nil || c.prev != nil || c.next != nil {
					t.Fatal("popped call still linked")
				}
			}
			if l.n != 0 || l.head != nil || l.tail != nil {
				t.Errorf("emptied list: n %d head %v tail %v", l.n, l.head, l.tail)
			}
		})
	}
}
