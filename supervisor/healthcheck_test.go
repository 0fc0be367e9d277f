package supervisor

import (
	"errors"
	"testing"
)

// setInRotation takes an instance out only while another one stays in,
// ignores verdicts about a process that was replaced meanwhile, and brings
// instances back.
func TestSetInRotation(t *testing.T) {
	d := newTestDaemon(t)
	a, err := d.app("web")
	if err != nil {
		t.Fatal(err)
	}
	cfg := *a.cfg.Load()
	cfg.Instances = 2
	v := newVersion("v1", &cfg)
	procs := []*process{{pid: 1001, done: make(chan struct{})}, {pid: 1002, done: make(chan struct{})}}
	for i, in := range v.instances {
		in.set(procs[i], endpoint{network: "unix", addr: "/nonexistent/v1.sock"}, true)
	}
	sick := errors.New("GET /healthz answered 503")
	in0, in1 := v.instances[0], v.instances[1]
	healthy := func(in *instance) bool { _, _, h, _ := in.snapshot(); return h }

	a.setInRotation(v, in0, procs[0], false, sick)
	if healthy(in0) || v.inRotation() != 1 {
		t.Fatalf("instance 0 still in rotation (in rotation: %d)", v.inRotation())
	}
	a.setInRotation(v, in1, procs[1], false, sick)
	if !healthy(in1) {
		t.Fatal("the last instance in rotation was taken out for failing checks")
	}
	a.setInRotation(v, in0, &process{pid: 999}, true, nil)
	if healthy(in0) {
		t.Fatal("a verdict about a replaced process brought instance 0 back")
	}
	a.setInRotation(v, in0, procs[0], true, nil)
	if !healthy(in0) || v.inRotation() != 2 {
		t.Fatalf("instance 0 not back (in rotation: %d)", v.inRotation())
	}
	v.markStopping()
	a.setInRotation(v, in0, procs[0], false, sick)
	if !healthy(in0) {
		t.Fatal("a retired version's instance changed rotation")
	}
}
