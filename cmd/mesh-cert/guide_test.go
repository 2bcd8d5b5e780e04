package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshnode/meshnode/internal/pgtest"
	"github.com/meshnode/meshnode/internal/testenv"
)

// haBlock is a shell block of GETTING-STARTED's high-availability section ("# ha: on ca1").
type haBlock struct {
	where string
	text  string
}

func haBlocks(md string) []haBlock {
	var out []haBlock
	re := regexp.MustCompile("(?s)```sh\n# ha: on (\\S+)\n(.*?)```")
	for _, m := range re.FindAllStringSubmatch(md, -1) {
		out = append(out, haBlock{where: m[1], text: m[2]})
	}
	return out
}

// TestHighAvailabilityGuideWorks runs section 11 of docs/GETTING-STARTED.md: each machine
// (db, ca1, ca2, app2) is a directory standing in for its /etc and /var/lib, the database
// is a throwaway cluster reached by its socket, the replicas listen on loopback ports
// standing in for ca1/ca2.mesh.example:8443, scp is a copy, and `systemctl enable --now` /
// `stop` start and stop the ExecStart of examples/systemd/mesh-cert-serve.service. The
// host enrolls while ca1 is stopped; the last listing must show it enrolled.
func TestHighAvailabilityGuideWorks(t *testing.T) {
	testenv.SkipShort(t)
	cluster := pgtest.Shared(t)
	root := moduleRootDir(t)
	md, err := os.ReadFile(filepath.Join(root, "docs", "GETTING-STARTED.md"))
	must(t, err)
	blocks := haBlocks(string(md))
	if len(blocks) < 8 {
		t.Fatalf("found %d high-availability blocks in the guide", len(blocks))
	}
	unit, err := os.ReadFile(filepath.Join(root, "examples", "systemd", "mesh-cert-serve.service"))
	must(t, err)
	execStart := regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindSubmatch(unit)
	if execStart == nil {
		t.Fatal("no ExecStart in mesh-cert-serve.service")
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	for _, pkg := range []string{".", "../meshnode"} {
		out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin+"/", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	pgBin := cluster.BinDir()
	ports := map[string]string{"ca1": freeLoopbackAddr(t), "ca2": freeLoopbackAddr(t)}
	mdir := func(m string) string { return filepath.Join(dir, m) }
	// subst maps the guide's machines onto this test's directories and ports.
	subst := func(m, s string) string {
		for _, h := range []string{"ca1", "ca2", "app2"} {
			s = strings.ReplaceAll(s, "root@"+h+":/etc/mesh-cert", mdir(h)+"/etc/mesh-cert")
			s = strings.ReplaceAll(s, "root@"+h+":/var/lib/mesh-cert", mdir(h)+"/var/lib/mesh-cert")
			s = strings.ReplaceAll(s, "root@"+h+":/etc/meshnode", mdir(h)+"/etc/meshnode")
		}
		s = strings.ReplaceAll(s, "/usr/local/bin/mesh-cert", filepath.Join(bin, "mesh-cert"))
		for _, p := range []string{"/etc/mesh-cert", "/var/lib/mesh-cert", "/etc/meshnode"} {
			s = regexp.MustCompile(`(^|[\s'"=:])`+regexp.QuoteMeta(p)).ReplaceAllString(s, "${1}"+mdir(m)+p)
		}
		s = strings.ReplaceAll(s, "/run/postgresql", cluster.SocketDir())
		s = strings.ReplaceAll(s, "ca1.mesh.example:8443", ports["ca1"])
		s = strings.ReplaceAll(s, "ca2.mesh.example:8443", ports["ca2"])
		return s
	}
	for _, m := range []string{"db", "ca1", "ca2", "app2"} {
		must(t, os.MkdirAll(mdir(m), 0o700))
	}
	// Section 2's CA files on ca1.
	mustOK(t, meshCert(t, time.Now(), "ca", "-name", "Acme", "-ips", "10.42.0.0/16",
		"-out-crt", filepath.Join(mdir("ca1"), "ca.crt"), "-out-key", filepath.Join(mdir("ca1"), "ca.key")))

	services := map[string]*serveProc{}
	sh := func(m, script string) string {
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", "scp() { cp \"$@\"; }\n"+script)
		cmd.Dir = mdir(m)
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+pgBin+":"+os.Getenv("PATH"), "PGHOST="+cluster.SocketDir(), "PGUSER=postgres")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("on %s:\n%s\n%v\n%s", m, script, err, out)
		}
		return string(out)
	}
	var last string
	for _, b := range blocks {
		var pending []string
		flush := func() {
			if len(pending) > 0 {
				last = sh(b.where, subst(b.where, strings.Join(pending, "\n")))
				pending = nil
			}
		}
		for _, l := range strings.Split(b.text, "\n") {
			switch strings.TrimSpace(l) {
			case "systemctl enable --now mesh-cert-serve":
				flush()
				// The machines' ca.yml files are copies of ca1's; here they name ca1's
				// directory where each real machine has its own /etc and /var/lib, and
				// every machine listens on its own loopback port for 0.0.0.0:8443.
				cfgPath := filepath.Join(mdir(b.where), "etc", "mesh-cert", "ca.yml")
				y, err := os.ReadFile(cfgPath)
				must(t, err)
				y = bytes.ReplaceAll(y, []byte(mdir("ca1")+"/"), []byte(mdir(b.where)+"/"))
				y = bytes.ReplaceAll(y, []byte("0.0.0.0:8443"), []byte(ports[b.where]))
				must(t, os.WriteFile(cfgPath, y, 0o600))
				args := strings.Fields(subst(b.where, string(execStart[1])))
				p := &serveProc{cmd: exec.Command(args[0], args[1:]...), logs: &lockedBuffer{}}
				p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
				must(t, p.cmd.Start())
				t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
				services[b.where] = p
				waitListening(t, ports[b.where], p)
			case "systemctl stop mesh-cert-serve":
				flush()
				p := services[b.where]
				p.cmd.Process.Signal(syscall.SIGTERM)
				p.cmd.Wait()
			default:
				pending = append(pending, l)
			}
		}
		flush()
	}
	if !regexp.MustCompile(`app2 10\.42\.2\.\d+/16 enrolled`).MatchString(last) {
		t.Errorf("the last listing does not show app2 enrolled:\n%s", last)
	}
	node, err := os.ReadFile(filepath.Join(mdir("app2"), "etc", "meshnode", "node.yml"))
	must(t, err)
	if !bytes.Contains(node, []byte("https://"+ports["ca1"]+",https://"+ports["ca2"])) {
		t.Errorf("app2's node.yml does not name both replicas for renewal:\n%s", node)
	}
}

func waitListening(t *testing.T, addr string, p *serveProc) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("mesh-cert serve did not listen on %s:\n%s", addr, p.logs.String())
}

func moduleRootDir(t *testing.T) string {
	t.Helper()
	d, err := os.Getwd()
	must(t, err)
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatal("no go.mod above the test")
		}
		d = filepath.Dir(d)
	}
}
