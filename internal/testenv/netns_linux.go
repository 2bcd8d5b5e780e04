package testenv

import (
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// NetNS creates a network namespace for the test (root required: it skips, or fails under
// CI) and deletes it, with every device in it, when the test ends. The name is prefix, the
// process id and a hash of the test's name and tag, so parallel packages and several
// namespaces of one test (told apart by tag) never collide. Nothing here touches the
// machine's own namespace.
func NetNS(t testing.TB, prefix, tag string) string {
	t.Helper()
	RequireRoot(t)
	RequireBinary(t, "ip")
	h := fnv.New32a()
	h.Write([]byte(t.Name() + "\x00" + tag))
	name := fmt.Sprintf("%s-%d-%08x", prefix, os.Getpid(), h.Sum32())
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return name
}

// Run runs a command and fails the test with its output when it fails; it returns the output.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// InNetNS runs fn on an OS thread switched into the namespace ns: sockets and devices fn
// opens belong to that namespace for their whole life. The thread switches back afterwards;
// if it cannot, it stays locked and the runtime discards it when the goroutine ends.
func InNetNS(t testing.TB, ns string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer unix.Close(orig)
	target, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("setns %s: %v", ns, err)
	}
	defer func() {
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			t.Errorf("setns back: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
}
