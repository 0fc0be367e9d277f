package supervisor

import (
	"errors"
	"fmt"
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

// The last instance in rotation is kept when its checks fail, and status
// said it was healthy: healthy meant "in rotation". Now healthy is false,
// in_rotation true, and health_error says why.
func TestStatusLastInstanceFailingChecks(t *testing.T) {
	// The app answers its first 3 health checks (the launch's among them),
	// then leaves them unanswered.
	_, a, _ := fakeAppDaemon(t, "settle = \"0s\"\nhealth_interval = \"50ms\"\nhealth_timeout = \"100ms\"\nfall = 2",
		fmt.Sprintf("%s = \"3\"", appHangCheckEnv))
	instance := func() InstanceStatus {
		st := a.Status()
		if len(st.Instances) != 1 {
			return InstanceStatus{}
		}
		return st.Instances[0]
	}
	eventually(t, "web to serve", func() bool { return instance().PID != 0 })
	eventually(t, "the failing checks to show", func() bool { return instance().HealthError != "" })
	in := instance()
	t.Logf("instance: %+v", in)
	if in.Healthy || !in.InRotation {
		t.Errorf("healthy %v, in_rotation %v: want false, true (the last instance stays in rotation)", in.Healthy, in.InRotation)
	}
}
