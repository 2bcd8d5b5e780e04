package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/client"
	"github.com/meshnode/meshnode/cert/authority/pgstore"
	"github.com/meshnode/meshnode/internal/pgtest"
	"github.com/meshnode/meshnode/internal/testenv"
)

// TestCAServiceThroughput measures enrollments/s and renewals/s of real `mesh-cert serve`
// processes over HTTPS, on bbolt and on PostgreSQL with 1 and 3 replicas, and the time of
// `mesh-cert list --tree` at 100 000 hosts (docs/PERFORMANCE.md). It runs only with
// MESHNODE_CA_BENCH=1 at full size (minutes, and it loads the machine); without it, a small
// run of the same code (20 hosts, 2000 for list --tree) proves the benchmark still works.
//
//	MESHNODE_CA_BENCH=1 go test -run TestCAServiceThroughput -v -timeout 30m ./cmd/mesh-cert/
func TestCAServiceThroughput(t *testing.T) {
	mode := os.Getenv("MESHNODE_CA_BENCH")
	hosts, workers, many := 600, 16, 100000
	if mode != "1" && mode != "list" {
		testenv.SkipShort(t)
		hosts, workers, many = 20, 4, 2000
	}
	type row struct {
		name              string
		enroll, renew     float64
		enrollP99, renP99 time.Duration
	}
	var rows []row
	for _, setup := range []struct {
		name     string
		replicas int
	}{{"bbolt, 1 process", 0}, {"PostgreSQL, 1 replica", 1}, {"PostgreSQL, 3 replicas", 3}} {
		if mode == "list" {
			break
		}
		var urls, socks []string
		if setup.replicas == 0 {
			addr := freeLoopbackAddr(t)
			dir, config := caService(t, time.Now(), addr)
			startServe(t, buildMeshCert(t), config)
			urls, socks = []string{"https://" + addr}, []string{filepath.Join(dir, "state", "admin.sock")}
		} else {
			rs := newReplicaSet(t, pgtest.Shared(t), setup.replicas, "1h")
			urls = rs.urls
			for _, c := range rs.configs {
				socks = append(socks, filepath.Join(filepath.Dir(c), "state", "admin.sock"))
			}
		}
		var secrets [][]byte
		var pin []byte
		adm, err := authority.DialAdmin(socks[0])
		must(t, err)
		for i := range hosts {
			tok, _, err := adm.Invite(authority.InviteRequest{Name: fmt.Sprintf("b%04d", i), CIDR: "mesh"})
			must(t, err)
			tk, _ := authority.ParseToken(tok)
			secrets, pin = append(secrets, tk.Secret), tk.Pin
		}
		nodes := make([]renewer, hosts)
		run := func(op func(i int, c *client.Client) error) (float64, time.Duration) {
			lat := make([]time.Duration, hosts)
			var wg sync.WaitGroup
			next := make(chan int)
			t0 := time.Now()
			for w := range workers {
				wg.Go(func() {
					c := client.New(urls[w%len(urls)], pin, client.Options{})
					for i := range next {
						s := time.Now()
						if err := op(i, c); err != nil {
							t.Errorf("%s: %v", setup.name, err)
						}
						lat[i] = time.Since(s)
					}
				})
			}
			for i := range hosts {
				next <- i
			}
			close(next)
			wg.Wait()
			el := time.Since(t0)
			slices.Sort(lat)
			return float64(hosts) / el.Seconds(), lat[hosts*99/100]
		}
		r := row{name: setup.name}
		r.enroll, r.enrollP99 = run(func(i int, c *client.Client) error {
			e, err := c.Enroll(context.Background(), secrets[i])
			if err == nil {
				nodes[i] = renewer{certPEM: e.CertPEM, key: e.Key, serviceKey: e.ServiceKey}
			}
			return err
		})
		r.renew, r.renP99 = run(func(i int, c *client.Client) error {
			_, err := nodes[i].renew(context.Background(), c)
			return err
		})
		if r.enroll <= 0 || r.renew <= 0 {
			t.Errorf("%s: no throughput measured: %+v", setup.name, r)
		}
		rows = append(rows, r)
		t.Logf("%s: %.0f enrollments/s (p99 %v), %.0f renewals/s (p99 %v)", r.name, r.enroll, r.enrollP99.Round(time.Millisecond), r.renew, r.renP99.Round(time.Millisecond))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| store | enrollments/s | p99 | renewals/s | p99 |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %.0f | %v | %.0f | %v |\n", r.name, r.enroll, r.enrollP99.Round(time.Millisecond), r.renew, r.renP99.Round(time.Millisecond))
	}

	// list --tree at 100 000 hosts, admin command with no service running.
	batch := min(5000, many)
	fill := func(s authority.Store) {
		cidrs := []authority.CIDR{{Name: "big", Prefix: netip.MustParsePrefix("10.0.0.0/8")}}
		for i := range 16 {
			cidrs = append(cidrs, authority.CIDR{Name: fmt.Sprint("site", i), Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)})
		}
		for lo := 0; lo < many; lo += batch {
			must(t, s.Update(func(tx authority.Tx) error {
				if lo == 0 {
					for _, c := range cidrs {
						if err := tx.PutCIDR(c); err != nil {
							return err
						}
					}
				}
				for i := lo; i < lo+batch; i++ {
					ip := netip.AddrFrom4([4]byte{10, byte(i % 16), byte(i / 16 / 250), byte(1 + i/16%250)})
					h := authority.Host{Name: fmt.Sprintf("host%06d", i), IP: netip.PrefixFrom(ip, 8), CIDR: fmt.Sprint("site", i%16),
						State: authority.HostEnrolled, Groups: []string{"web"}, Fingerprint: strings.Repeat("ab", 32),
						NotAfter: time.Now().Add(time.Hour), Enrolled: time.Now(), LastRenewal: time.Now()}
					if err := tx.PutHost(h); err != nil {
						return err
					}
				}
				return nil
			}))
		}
	}
	listTree := func(config string) time.Duration {
		t0 := time.Now()
		code := run([]string{"list", "-config", config, "--tree"}, &env{stdout: io.Discard, stderr: os.Stderr, now: time.Now})
		if code != 0 {
			t.Fatalf("list --tree exit %d", code)
		}
		return time.Since(t0)
	}
	_, boltConfig := caService(t, time.Now(), "127.0.0.1:0")
	must(t, os.MkdirAll(filepath.Join(filepath.Dir(boltConfig), "state"), 0o700))
	bs, err := authority.OpenBolt(filepath.Join(filepath.Dir(boltConfig), "state", "ca.db"), time.Second)
	must(t, err)
	t0 := time.Now()
	fill(bs)
	bs.Close()
	fillBolt := time.Since(t0)
	boltFirst := listTree(boltConfig) // adds ca.yml's CIDRs, checking every host against them
	boltList := listTree(boltConfig)

	dsn := pgtest.NewDB(t)
	ps, err := pgstore.Open(context.Background(), dsn, pgstore.Options{Migrate: true})
	must(t, err)
	t0 = time.Now()
	fill(ps)
	ps.Close()
	fillPG := time.Since(t0)
	yml, _ := os.ReadFile(boltConfig)
	pgConfig := filepath.Join(filepath.Dir(boltConfig), "pg.yml")
	yml = []byte(strings.Replace(string(yml), "state_dir: state", "state_dir: pgstate", 1))
	must(t, os.WriteFile(pgConfig, append(yml, []byte("store: {type: postgres, dsn: '"+dsn+"'}\n")...), 0o600))
	pgFirst := listTree(pgConfig)
	pgList := listTree(pgConfig)
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
	fmt.Fprintf(&b, "\n| %d hosts | bbolt | PostgreSQL |\n|---|---|---|\n| list --tree | %v | %v |\n| first list --tree (adds ca.yml's CIDRs, checking every host) | %v | %v |\n| writing the hosts, %d a transaction | %v | %v |\n",
		many, r(boltList), r(pgList), r(boltFirst), r(pgFirst), batch, r(fillBolt), r(fillPG))
	t.Logf("\n%s", b.String())
}
