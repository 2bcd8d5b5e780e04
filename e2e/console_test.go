package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/sys/unix"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/e2e/netns"
	"github.com/meshnode/meshnode/internal/testenv"
)

// consoleAddr is where the CA service's web console listens, in the service's namespace.
const consoleAddr = tokenCAAddr + ":8444"

// TestConsoleRunsTheMeshFromABrowser drives the web console with headless Chromium, as an
// admin would: sign in, invite web1 and copy its token, which a real meshnode enrolls with
// in its namespace; web1 then shows in the network tree as enrolled. Add a phone by its
// public key, revoke web1 (confirming) and see its tunnels cut on the mesh, and find every
// step, with the admin's name, on the audit page. With CONSOLE_SCREENSHOTS=dir it saves the
// screenshots of docs/img there.
func TestConsoleRunsTheMeshFromABrowser(t *testing.T) {
	requireNamespaceSuite(t)
	chromium := testenv.RequireBinary(t, "chromium")
	m := newTokenMesh(t, "con", "lighthouse", "web1", "web2")
	lh, web1, web2 := m.hosts[0], m.hosts[1], m.hosts[2]
	m.makeCA("family mesh", "ca")
	m.writeCAConfig(tokenOneCA, time.Hour)
	yml, err := os.ReadFile(m.caYML)
	consoleMust(t, err)
	// A second CIDR for the phones, and the console.
	yml = []byte(strings.Replace(string(yml), "      servers:\n        cidr: 10.42.0.0/24\n",
		"      servers:\n        cidr: 10.42.0.0/24\n      family:\n        cidr: 10.42.100.0/24\n", 1))
	tokenWriteFile(t, m.caYML, string(yml)+"console:\n  listen: "+consoleAddr+"\n")
	const password = "a long family password"
	add := exec.Command(m.meshCert, "admin", "add", "alice", "-config", m.caYML, "-password-stdin")
	add.Stdin = strings.NewReader(password + "\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("mesh-cert admin add: %v\n%s", err, out)
	}
	svc := m.startService()
	if err := svc.WaitLog(10*time.Second, "web console listening"); err != nil {
		t.Fatalf("%v\n%s", err, svc.Tail(20))
	}
	// The lighthouse and web2 join by the CLI.
	for _, h := range []*tokenHost{lh, web2} {
		m.enroll(h, m.invite(h, "-ip", h.overlay), tokenRenewal)
		m.start(h)
	}

	// Chromium runs in the machine's namespace (its DevTools socket must be reachable); it
	// reaches the console through a loopback port forwarded into the service's namespace.
	base := "https://" + forwardIntoNS(t, m.caNS, consoleAddr)
	shots := os.Getenv("CONSOLE_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	consoleMust(t, os.MkdirAll(shots, 0o755))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	actx, cancelA := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-quic", true),
		// The console's certificate is the service's self-signed, pinned one.
		chromedp.IgnoreCertErrors, chromedp.WindowSize(1100, 800))...)
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	// The first action opens the tab, bound to the context it runs with: bctx, not a step's.
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("browser: %v", err)
	}
	run := func(what string, as ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		for i, a := range as {
			if err := chromedp.Do(sctx, a); err != nil {
				loc, _ := chromedp.Run(bctx, chromedp.Location())
				html, _ := chromedp.Run(bctx, chromedp.OuterHTML(chromedp.CSS("main")))
				t.Fatalf("browser: %s, step %d: %v\nat %s: %s\nservice: %s", what, i+1, err, loc, html, svc.Tail(20))
			}
		}
	}
	textOf := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("browser: text of %s: %v", sel, err)
		}
		return s
	}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name), png, 0o644)
		})
	}
	var text string

	run("sign in",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#login")),
		shot("console-login.png"),
		chromedp.SendKeys(chromedp.CSS("#name"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("#login button")),
		chromedp.WaitVisible(chromedp.CSS("#logout")))

	run("invite web1",
		chromedp.Navigate(base+"/invite"),
		chromedp.WaitVisible(chromedp.CSS("#invite")),
		chromedp.SendKeys(chromedp.CSS("#name"), web1.name),
		chromedp.SetValue(chromedp.CSS("#cidr"), "servers"),
		chromedp.SendKeys(chromedp.CSS("#ip"), web1.overlay),
		chromedp.SendKeys(chromedp.CSS("#groups"), "e2e"),
		chromedp.Click(chromedp.CSS("#invite button")),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		shot("console-invite.png"))
	token := strings.TrimSpace(textOf("#token"))
	text = textOf("#command")
	if !strings.Contains(text, "meshnode enroll -token '"+token+"'") {
		t.Errorf("enroll command on the page: %q", text)
	}

	// A real meshnode enrolls with the token from the page and joins the mesh.
	m.enroll(web1, token, tokenRenewal)
	m.start(web1)
	if _, err := web2.ns.WaitPing(30*time.Second, web1.overlay); err != nil {
		t.Fatalf("web2 → web1 over the mesh: %v\n%s", err, web1.proc.Tail(20))
	}

	run("web1 in the tree",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#host-web1")))
	text = textOf("#host-web1")
	if !strings.Contains(text, "enrolled") || !strings.Contains(text, web1.overlay) {
		t.Errorf("tree row of web1: %q", text)
	}

	// A phone: the app made the key; the admin pastes the public key.
	pub, _, err := cert.GenerateX25519()
	consoleMust(t, err)
	run("add a phone",
		chromedp.Navigate(base+"/devices/new"),
		chromedp.WaitVisible(chromedp.CSS("#device")),
		chromedp.SendKeys(chromedp.CSS("#name"), "anna-phone"),
		chromedp.SetValue(chromedp.CSS("#cidr"), "family"),
		chromedp.SendKeys(chromedp.CSS("#groups"), "family"),
		chromedp.SetValue(chromedp.CSS("#public_key"), string(cert.MarshalX25519PublicKey(pub))),
		chromedp.Click(chromedp.CSS("#device button")),
		chromedp.WaitVisible(chromedp.CSS("#cert-qr")),
		shot("console-device.png"))
	text = textOf("#device-ready")
	if !strings.Contains(text, "10.42.100.1") {
		t.Errorf("device page: %q", text)
	}
	run("tree", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#host-anna-phone")), shot("console-tree.png"))

	if !hasPeer(t, m.meshnode, web2, web1.overlay) {
		t.Fatal("web2 has no tunnel to web1 before the revocation")
	}
	run("revoke web1",
		chromedp.Navigate(base+"/revoke?host=web1"),
		chromedp.WaitVisible(chromedp.CSS("#confirm-revoke")),
		shot("console-revoke.png"),
		chromedp.Click(chromedp.CSS("#confirm-revoke")),
		chromedp.WaitVisible(chromedp.CSS("#revoked")))
	revoked := time.Now()
	err = netns.Eventually(60*time.Second, 250*time.Millisecond, func() error {
		for _, h := range []*tokenHost{lh, web2} {
			if hasPeer(t, m.meshnode, h, web1.overlay) {
				return fmt.Errorf("%s still has a tunnel to web1", h.name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v after the revocation in the console\n%s", err, web2.proc.Tail(20))
	}
	t.Logf("web1's tunnels gone %v after the revocation", time.Since(revoked).Round(100*time.Millisecond))
	if out, err := web2.ns.RunTimeout(10*time.Second, "ping", "-c", "2", "-W", "1", web1.overlay); err == nil {
		t.Errorf("web2 still reaches web1 after the revocation:\n%s", out)
	}

	run("audit",
		chromedp.Navigate(base+"/audit"),
		chromedp.WaitVisible(chromedp.CSS("#audit")),
		shot("console-audit.png"))
	text = textOf("#audit")
	for _, want := range []string{"console-login\t\talice", "invite\tweb1\talice", "enroll\tweb1", "device-add\tanna-phone\talice", "revoke\tweb1\talice"} {
		if !strings.Contains(text, want) {
			t.Errorf("audit page lacks %q:\n%s", want, text)
		}
	}
	run("status and warnings",
		chromedp.Navigate(base+"/status"), chromedp.WaitVisible(chromedp.CSS("#rotation")), shot("console-status.png"),
		chromedp.Navigate(base+"/warnings"), chromedp.WaitVisible(chromedp.CSS("#warnings")), shot("console-warnings.png"),
		// The console on a phone-sized screen.
		chromedp.EmulateViewport(390, 844),
		chromedp.Navigate(base+"/devices/show?host=anna-phone"), chromedp.WaitVisible(chromedp.CSS("#cert-qr")), shot("console-phone.png"))
}

// forwardIntoNS listens on a loopback port of the machine's namespace and forwards each
// connection to addr as dialled from inside ns; it returns the loopback address.
func forwardIntoNS(t *testing.T, ns *netns.Namespace, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	consoleMust(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				d, err := dialInNS(ns.Name, addr)
				if err != nil {
					return
				}
				defer d.Close()
				go func() { io.Copy(d, c); d.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, d)
			}()
		}
	}()
	return ln.Addr().String()
}

// dialInNS opens a TCP connection whose socket belongs to namespace ns: it is created on a
// thread switched into ns, and a socket stays in the namespace it was made in.
func dialInNS(ns, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer unix.Close(orig)
	target, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if serr := unix.Setns(orig, unix.CLONE_NEWNET); serr != nil {
		// The thread stays locked: the runtime discards it when the goroutine ends.
		if c != nil {
			c.Close()
		}
		return nil, errors.Join(err, serr)
	}
	runtime.UnlockOSThread()
	return c, err
}

func consoleMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
