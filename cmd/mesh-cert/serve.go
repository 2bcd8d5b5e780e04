package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/console"
)

func newServeCmd(e *env) *cobra.Command {
	var config string
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the CA service: enrollment, renewal and the signed blocklist over pinned HTTPS",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runServe(ctx, e, config, nil)
		},
	}
	c.Flags().StringVar(&config, "config", "", "Required: path to the CA service config (ca.yml)")
	return c
}

// runServe runs until ctx is done. ready, if set, gets the HTTPS address once both the API
// and the admin socket accept connections.
func runServe(ctx context.Context, e *env, config string, ready func(addr string)) error {
	if config == "" {
		return usagef("-config is required")
	}
	cfg, err := authority.LoadConfig(config)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	if strings.HasSuffix(cfg.URL, ":0") { // listen on a random port (tests): tokens name the real one
		cfg.URL = "https://" + ln.Addr().String()
	}
	svc, err := openService(e, cfg, log, time.Second, true)
	if errors.Is(err, authority.ErrStoreLocked) {
		return fmt.Errorf("%w: is another mesh-cert serve running with %s?", err, config)
	}
	if err != nil {
		return err
	}
	defer svc.Close()
	adminLn, err := authority.ListenAdmin(cfg.AdminSocket)
	if err != nil {
		return err
	}
	for _, w := range svc.Authority.Warnings() {
		log.Warn(w)
	}
	log.Info("CA service listening", "addr", ln.Addr().String(), "url", cfg.URL, "tls_pin", svc.TLS.PinString(),
		"active_ca", svc.Authority.ActiveCA().Fingerprint(), "admin_socket", cfg.AdminSocket)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	adminDone := make(chan error, 1)
	go func() { adminDone <- authority.ServeAdmin(ctx, adminLn, svc.Authority, log) }()
	if ready != nil {
		ready(ln.Addr().String())
	}
	reg := prometheus.NewRegistry()
	srv := authority.NewServer(authority.ServerOptions{Authority: svc.Authority, TLS: svc.TLS,
		EnrollRate: cfg.Enroll.Rate, EnrollBurst: cfg.Enroll.Burst, Registerer: reg, Logger: log, Now: e.now})
	metricsDone := make(chan error, 1)
	if cfg.MetricsListen != "" {
		go func() { metricsDone <- serveMetrics(ctx, cfg.MetricsListen, reg) }()
	} else {
		metricsDone <- nil
	}
	consoleDone := make(chan error, 1)
	if err := startConsole(ctx, cfg, svc, log, e, consoleDone); err != nil {
		cancel()
		<-adminDone
		<-metricsDone
		return err
	}
	go warnPeriodically(ctx, svc.Authority, log)
	err = srv.Serve(ctx, ln)
	cancel()
	for _, ch := range []chan error{adminDone, metricsDone, consoleDone} {
		if aerr := <-ch; err == nil {
			err = aerr
		}
	}
	os.Remove(cfg.AdminSocket)
	log.Info("CA service stopped")
	return err
}

// warnPeriodically repeats the service's warnings (a CA nearing expiry) every few hours,
// so they show up in logs read long after the start.
func warnPeriodically(ctx context.Context, a *authority.Authority, log *slog.Logger) {
	t := time.NewTicker(6 * time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, w := range a.Warnings() {
				log.Warn(w)
			}
		}
	}
}

func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	hs := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		hs.Close()
	}()
	if err := hs.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics_listen: %w", err)
	}
	return nil
}

// startConsole serves the web console when console.listen is set (it is off by default).
func startConsole(ctx context.Context, cfg *authority.Config, svc *authority.Service, log *slog.Logger, e *env, done chan<- error) error {
	cc := cfg.Console
	if cc.Listen == "" {
		done <- nil
		return nil
	}
	con, err := console.New(console.Options{Authority: svc.Authority, TLS: svc.TLS, AdminsFile: cc.Admins,
		Session: cc.Session, IdleTimeout: cc.IdleTimeout, DeviceCert: cc.DeviceCert, DeviceReminder: cc.DeviceReminder,
		ExpiryWarning: cc.ExpiryWarning, Logger: log, Now: e.now})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cc.Listen)
	if err != nil {
		return fmt.Errorf("console.listen: %w", err)
	}
	as, _ := console.LoadAccounts(cc.Admins)
	log.Info("web console listening", "addr", "https://"+ln.Addr().String(), "admins", len(as), "tls_pin", svc.TLS.PinString())
	if len(as) == 0 {
		log.Warn("the web console has no admin accounts yet: add one with mesh-cert admin add NAME -config ...")
	}
	go func() { done <- con.Serve(ctx, ln) }()
	return nil
}
