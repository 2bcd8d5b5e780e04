// Command meshnode runs one host of the mesh: `meshnode -config node.yml`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meshnode/meshnode/internal/prom"

	"github.com/meshnode/meshnode/cert/authority/api"
	"github.com/meshnode/meshnode/internal/cli"
	"github.com/meshnode/meshnode/internal/gcpolicy"
	"github.com/meshnode/meshnode/internal/version"
	"github.com/meshnode/meshnode/nodekeys"
	"github.com/meshnode/meshnode/overlay"
	"github.com/meshnode/meshnode/overlay/tun"
	"github.com/meshnode/meshnode/overlay/udp"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line (the daemon or a subcommand, commands.go) and returns the
// exit status: 0, 1 on failure, 2 on a usage mistake.
func run(args []string, stdout, stderr io.Writer) int {
	return cli.Execute(newRoot(stdout, stderr), args)
}

// daemonOptions are the root command's flags.
type daemonOptions struct {
	config     string
	test       bool
	control    string
	controlSet bool // -control was given: it wins over the config's control section
	cpuProfile string
	memProfile string
}

// runDaemon is `meshnode -config node.yml`: the daemon (or, with -test, a config check).
func runDaemon(o daemonOptions, stdout, stderr io.Writer) int {
	configPath, testOnly := &o.config, &o.test
	if *configPath == "" {
		fmt.Fprintln(stderr, "meshnode: -config is required (e.g. meshnode -config /etc/meshnode/node.yml)")
		return 2
	}
	if !*testOnly {
		if err := checkDaemonPlatform(daemonGOOS); err != nil {
			fmt.Fprintf(stderr, "meshnode: %v\n", err)
			return 1
		}
	}
	cfg, err := overlay.LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "meshnode: %v\n", err)
		return 1
	}
	level := new(slog.LevelVar)
	log := newLogger(cfg.Logging, level, stderr)
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if *testOnly {
		// The enroll section (nodekeys): with no pki files yet, check the token and stop there.
		enrollNow, err := nodekeys.EnrollState(cfg)
		if err == nil && enrollNow {
			var tok api.Token
			if _, tok, err = nodekeys.EnrollToken(cfg.Enroll); err == nil {
				fmt.Fprintf(stdout, "%s: config OK; no pki files yet: the daemon will enroll at start with the CA service at %s\n", *configPath, tok.URL)
				return 0
			}
		}
		if err != nil {
			fmt.Fprintf(stderr, "meshnode: %s: %v\n", *configPath, err)
			return 1
		}
	} else if cfg, err = nodekeys.EnrollAtStart(context.Background(), cfg, *configPath, log); err != nil {
		log.Error("enrollment failed", "err", err)
		fmt.Fprintf(stderr, "meshnode: %v\n", err)
		return 1
	}
	nodekeys.RecoverAtStart(cfg, log) // a crash mid-renewal can leave key and cert apart
	pki, err := overlay.LoadPKI(cfg, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "meshnode: %s: %v\n", *configPath, err)
		return 1
	}
	if *testOnly {
		if err := overlay.CheckRoutes(cfg, pki); err != nil {
			fmt.Fprintf(stderr, "meshnode: %s: %v\n", *configPath, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: config OK (host %s, %s)\n", *configPath, pki.Creds.Cert.Details.Name, pki.Creds.Cert.VpnIP())
		if cfg.Enroll.Enabled() {
			fmt.Fprintf(stdout, "note: the pki files exist, so the enroll section is ignored (its token is spent)\n")
		}
		if !cfg.Tun.Disabled && capNetAdminMissing() {
			// -test opens nothing, so say now what the daemon will run into.
			fmt.Fprintf(stdout, "note: this user lacks CAP_NET_ADMIN, so the daemon will not be able to create its TUN device: "+
				"run it as root, or as a service (%s)\n", unitCaps)
		}
		return 0
	}
	// The flag wins when given; otherwise the config's control section decides.
	ctlPath := o.control
	if !o.controlSet {
		switch {
		case cfg.Control.Disabled:
			ctlPath = ""
		case cfg.Control.Path != "":
			ctlPath = cfg.Control.Path
		}
	}
	// Less GC headroom once the live heap is large (a lighthouse of many hosts), unless
	// GOGC or GOMEMLIMIT says otherwise.
	defer gcpolicy.Start().Stop()
	stopProfiles, err := startProfiles(o.cpuProfile, o.memProfile)
	if err != nil {
		fmt.Fprintf(stderr, "meshnode: %v\n", err)
		return 1
	}
	err = serve(cfg, pki, log, level, ctlPath)
	if perr := stopProfiles(); perr != nil {
		fmt.Fprintf(stderr, "meshnode: %v\n", perr)
	}
	if err != nil {
		// One line, not a log record and the same again: the logger writes to stderr too.
		fmt.Fprintf(stderr, "meshnode: %v\n", err)
		return 1
	}
	return 0
}

func serve(cfg *overlay.Config, pki *overlay.PKI, log *slog.Logger, level *slog.LevelVar, controlPath string) error {
	host := strings.Trim(cfg.Listen.Host, "[]")
	la, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.LookupIP(host)
		if lerr != nil || len(ips) == 0 {
			return fmt.Errorf("listen.host %q: cannot resolve", cfg.Listen.Host)
		}
		la, _ = netip.AddrFromSlice(ips[0])
	}
	bufSize := overlay.DefaultSocketBuffer
	uopts := udp.Options{
		ReadBuffer: pick(cfg.Listen.ReadBuffer, bufSize), WriteBuffer: pick(cfg.Listen.WriteBuffer, bufSize),
		Batch: cfg.Listen.Batch, ReusePort: cfg.Routines > 1 || priority(cfg), Mark: uint32(cfg.Listen.SoMark),
	}
	laddr := netip.AddrPortFrom(la.Unmap(), uint16(cfg.Listen.Port))
	if uopts.ReusePort && laddr.Port() != 0 {
		// With SO_REUSEPORT a second daemon's sockets would join ours and take half the
		// traffic in silence. A socket without it fails on a port anyone holds, so one
		// is bound first (and closed) to find out, and our own then make a second
		// daemon's check fail the same way.
		probe, err := udp.Listen(laddr, udp.Options{Batch: 1, DisableGRO: true, DisableGSO: true})
		if err != nil {
			return listenError(cfg.Listen.Host, cfg.Listen.Port, err)
		}
		if err := probe.Close(); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	conn, err := udp.Listen(laddr, uopts)
	if err != nil {
		return listenError(cfg.Listen.Host, cfg.Listen.Port, err)
	}
	// routines > 1: one more socket per routine on the same address (SO_REUSEPORT; the
	// first one's port, which listen.port 0 left to the kernel).
	var conns []udp.Conn
	closeConns := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for range cfg.Routines - 1 {
		c, err := udp.Listen(conn.LocalAddr(), uopts)
		if err != nil {
			conn.Close()
			closeConns()
			return fmt.Errorf("routines: another socket on %s: %w", conn.LocalAddr(), err)
		}
		conns = append(conns, c)
	}
	var dev tun.Device
	if !cfg.Tun.Disabled {
		own := pki.Creds.Cert
		opts := tun.Options{Name: cfg.Tun.Dev, MTU: cfg.Tun.MTU, Addr: own.Details.Ips[0],
			Addrs: pki.Networks(), TxQueueLen: cfg.Tun.TxQueue, Offload: *cfg.Tun.Offload, Queues: cfg.Routines,
			// The overlay writes only packets that passed a tunnel's AEAD (and rejects it builds).
			AuthenticatedWrites: true,
			// Small packets get a lane of their own, so a bulk transfer's queues do not
			// delay them.
			PriorityQueue: priority(cfg)}
		dev, err = tun.Open(opts)
		if errors.Is(err, tun.ErrNoOffload) {
			log.Warn("TUN offloads unavailable; using the plain device (one packet per system call)", "err", err)
			opts.Offload = false
			dev, err = tun.Open(opts)
		}
		if err != nil {
			conn.Close()
			closeConns()
			return tunError(cfg.Tun.Dev, err)
		}
	}
	prioConn, err := priorityConn(dev, conn, uopts, log)
	if err != nil {
		conn.Close()
		closeConns()
		if dev != nil {
			dev.Close()
		}
		return err
	}
	reg := prom.NewRegistry()
	reg.MustRegister(prom.GoCollector(), prom.ProcessCollector(), buildInfo())
	if d, ok := dev.(offloader); ok && d.Offload() {
		registerOffloadMetrics(reg, d)
	}
	node, err := overlay.New(cfg, pki, overlay.Options{Device: dev, Conn: conn, Conns: conns, PriorityConn: prioConn, Logger: log, Registerer: reg})
	if err != nil {
		conn.Close()
		closeConns()
		if prioConn != nil {
			prioConn.Close()
		}
		if dev != nil {
			dev.Close()
		}
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if cfg.Stats.Type == "prometheus" {
		srv, err := startStats(cfg.Stats, reg, log)
		if err != nil {
			node.Close()
			conn.Close()
			if dev != nil {
				dev.Close()
			}
			return err
		}
		defer srv.Close()
	}
	target, stopKeys := nodekeys.Start(ctx, cfg, pki, node, reg, log) // renewal + blocklist
	defer stopKeys()
	rl := newReloader(cfg, pki, target, level, log)
	if controlPath != "" {
		ctl, err := overlay.ListenControl(node, overlay.ControlOptions{Path: controlPath, Mode: cfg.Control.SocketMode(), Reload: rl.reload,
			Version: version.Get().Version, Logger: log})
		if err != nil {
			// The mesh matters more than the status command: run without it.
			log.Warn("no control socket; meshnode status/ping/list/reload will not work", "err", err)
		} else {
			ctlDone := make(chan struct{})
			go func() {
				defer close(ctlDone)
				if err := ctl.Serve(ctx); err != nil {
					log.Error("control socket stopped", "err", err)
				}
			}()
			defer func() { ctl.Close(); <-ctlDone }()
			log.Info("control socket", "path", ctl.Path())
		}
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			if s == syscall.SIGHUP {
				rl.reload() // logs what changed or why it failed
				continue
			}
			log.Info("shutting down", "signal", s.String())
			cancel()
			return
		}
	}()
	log.Info("meshnode started", "version", version.Get().Version, "commit", version.Get().Commit, "host", pki.Creds.Cert.Details.Name,
		"vpn_ip", pki.Creds.Cert.VpnIP(), "listen", conn.LocalAddr(), "cipher", pickStr(cfg.Cipher, "aes"))
	if err := sdNotify("READY=1"); err != nil {
		log.Warn("cannot tell systemd that meshnode is ready", "err", err)
	}
	return node.Run(ctx)
}

func startStats(sc overlay.StatsConfig, reg *prom.Registry, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", sc.Listen)
	if err != nil {
		return nil, fmt.Errorf("stats.listen %q: %w", sc.Listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle(sc.Path, reg)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("stats server stopped", "err", err)
		}
	}()
	log.Info("prometheus metrics", "listen", ln.Addr().String(), "path", sc.Path)
	return srv, nil
}

// newLogger builds the daemon's logger; level can be changed later (reload).
func newLogger(lc overlay.LoggingConfig, level *slog.LevelVar, w io.Writer) *slog.Logger {
	level.Set(parseLevel(lc.Level))
	opts := &slog.HandlerOptions{Level: level}
	if lc.DisableTimestamp {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		}
	}
	if lc.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "trace", "debug": // slog has no trace level
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error", "fatal", "panic":
		return slog.LevelError
	}
	return slog.LevelInfo
}

func pick(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

func pickStr(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

// offloader is a TUN device that may run with offloads (tun.Linux).
type offloader interface {
	Offload() bool
	OffloadStats() tun.OffloadStats
}

// registerOffloadMetrics exports the device's offload counters, read at scrape time.
func registerOffloadMetrics(reg prom.Registerer, d offloader) {
	for _, c := range []struct {
		event, help string
		get         func(tun.OffloadStats) uint64
	}{
		{"split", "TCP super-packets read from the TUN device and split.", func(s tun.OffloadStats) uint64 { return s.Split }},
		{"segments", "Packets the split super-packets became.", func(s tun.OffloadStats) uint64 { return s.Segments }},
		{"coalesced", "TCP super-packets written to the TUN device.", func(s tun.OffloadStats) uint64 { return s.Coalesced }},
		{"joined", "Packets joined into written super-packets.", func(s tun.OffloadStats) uint64 { return s.Joined }},
		{"dropped", "TUN reads dropped: malformed virtio-net header or super-packet, or too big.", func(s tun.OffloadStats) uint64 { return s.Dropped }},
		{"fallbacks", "Super-packets the kernel refused, written one packet at a time.", func(s tun.OffloadStats) uint64 { return s.Fallbacks }},
	} {
		reg.MustRegister(prom.NewCounterFunc(prom.CounterOpts{
			Name: "meshnode_tun_offload_" + c.event + "_total", Help: c.help,
		}, func() float64 { return float64(c.get(d.OffloadStats())) }))
	}
}

// priority says whether small packets get a lane of their own (tun.priority_queue): only
// with one routine, since with more the kernel spreads flows over the queues by hash.
func priority(cfg *overlay.Config) bool {
	return !cfg.Tun.Disabled && *cfg.Tun.PriorityQueue && cfg.Routines <= 1
}

// priorityConn opens the socket of the priority lane: on conn's address, given only small
// datagrams by the kernel (udp.SteerSmall). Without the device's priority queue, or when
// the kernel refuses a step, there is none and small packets go the common way (a
// warning says why); only a failure to close what was opened is an error.
func priorityConn(dev tun.Device, conn udp.Conn, uopts udp.Options, log *slog.Logger) (udp.Conn, error) {
	type prioritised interface {
		PriorityQueue() tun.Device
		PriorityQueueErr() error
	}
	p, ok := dev.(prioritised)
	if !ok || !uopts.ReusePort {
		return nil, nil
	}
	if p.PriorityQueue() == nil {
		if err := p.PriorityQueueErr(); err != nil {
			log.Warn("tun.priority_queue: the kernel refused the steering program; small packets wait with the rest", "err", err)
		}
		return nil, nil
	}
	// Small datagrams only: no coalescing (its 1 MiB of buffers; nor would a small
	// datagram be joined onto a bulk burst for the main socket), no GSO (a train of small
	// datagrams would reach the peer's sockets whole, as long as a big one).
	uopts.DisableGRO, uopts.DisableGSO = true, true
	pc, err := udp.Listen(conn.LocalAddr(), uopts)
	if err != nil {
		log.Warn("tun.priority_queue: no second socket; small packets arrive with the rest", "err", err)
		return nil, nil
	}
	if err := udp.SteerSmall(conn, pc, overlay.PriorityDatagramMax); err != nil {
		log.Warn("tun.priority_queue: the kernel refused socket steering; small packets arrive with the rest", "err", err)
		if cerr := pc.Close(); cerr != nil {
			return nil, cerr
		}
		return nil, nil
	}
	return pc, nil
}
