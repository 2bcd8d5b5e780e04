package main

import (
	"strings"
	"testing"
)

func TestRampAndMilestoneListsParse(t *testing.T) {
	got, err := floats(" 250, 500,,1000 ")
	if err != nil || len(got) != 3 || got[0] != 250 || got[2] != 1000 {
		t.Fatalf("floats = %v, %v", got, err)
	}
	for _, bad := range []string{"0", "-5", "fast"} {
		if _, err := floats(bad); err == nil {
			t.Errorf("floats(%q) accepted", bad)
		}
	}
	if n, err := ints("10000,50000"); err != nil || n[1] != 50000 {
		t.Fatalf("ints = %v, %v", n, err)
	}
}

func TestRunRefusesBadFlagsBeforeTouchingTheNetwork(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-mode", "relay"}, "want lighthouse or host"},
		{[]string{"-n", "0"}, "positive"},
		{[]string{"-ramp", "1,x"}, "-ramp"},
	} {
		if err := run(append(c.args, "-pki", t.TempDir())); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err %v, want %q", c.args, err, c.want)
		}
	}
}
