package authority

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// The admin socket lets mesh-cert invite/list/revoke reach a running service, which holds
// the store file exclusively. It is a unix socket with mode 0600: whoever can open it is
// the admin, so it carries no other authentication, and it never listens on the network.

// AdminInviteRequest is the body of POST /admin/invite.
type AdminInviteRequest struct {
	Name   string        `json:"name"`
	CIDR   string        `json:"cidr"`
	IP     netip.Addr    `json:"ip,omitzero"`
	IP6    netip.Addr    `json:"ip6,omitzero"`
	Groups []string      `json:"groups,omitempty"`
	TTL    time.Duration `json:"ttl,omitempty"`
	// Replace: see InviteRequest.Replace.
	Replace bool           `json:"replace,omitempty"`
	Subnets []netip.Prefix `json:"subnets,omitempty"`
}

// AdminInviteResponse answers an invite.
type AdminInviteResponse struct {
	Token   string         `json:"token"`
	Name    string         `json:"name"`
	IP      netip.Prefix   `json:"ip"`
	IP6     netip.Prefix   `json:"ip6,omitzero"`
	Groups  []string       `json:"groups"`
	CIDR    string         `json:"cidr"`
	Subnets []netip.Prefix `json:"subnets,omitempty"`
}

// AdminRevokeRequest is the body of POST /admin/revoke.
type AdminRevokeRequest struct {
	Target string `json:"target"`
}

// Admin is what the admin commands need; both *Authority and *AdminClient provide it.
type Admin interface {
	AddCIDR(CIDR) error
	Invite(InviteRequest) (string, Identity, error)
	Inventory() (Inventory, error)
	Revoke(target string) (RevokeResult, error)
	Audit() ([]AuditEntry, error)
}

var (
	_ Admin = (*Authority)(nil)
	_ Admin = (*AdminClient)(nil)
)

// AdminHandler serves an Admin over HTTP for the admin socket.
func AdminHandler(a Admin, logger *slog.Logger) http.Handler {
	s := NewServer(ServerOptions{Logger: logger}) // for its decode and error replies
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/invite", func(w http.ResponseWriter, r *http.Request) {
		var req AdminInviteRequest
		if err := s.decode(w, r, &req); err != nil {
			s.fail(w, r, err)
			return
		}
		tok, id, err := a.Invite(InviteRequest(req))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.ok(w, r, AdminInviteResponse{Token: tok, Name: id.Name, IP: id.IP, IP6: id.IP6, Groups: id.Groups, CIDR: id.CIDR, Subnets: id.Subnets})
	})
	mux.HandleFunc("POST /admin/cidr", func(w http.ResponseWriter, r *http.Request) {
		var c CIDR
		if err := s.decode(w, r, &c); err != nil {
			s.fail(w, r, err)
			return
		}
		if err := a.AddCIDR(c); err != nil {
			s.fail(w, r, err)
			return
		}
		s.ok(w, r, c)
	})
	mux.HandleFunc("GET /admin/inventory", func(w http.ResponseWriter, r *http.Request) {
		inv, err := a.Inventory()
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.ok(w, r, inv)
	})
	mux.HandleFunc("GET /admin/audit", func(w http.ResponseWriter, r *http.Request) {
		es, err := a.Audit()
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.ok(w, r, es)
	})
	mux.HandleFunc("POST /admin/revoke", func(w http.ResponseWriter, r *http.Request) {
		var req AdminRevokeRequest
		if err := s.decode(w, r, &req); err != nil {
			s.fail(w, r, err)
			return
		}
		res, err := a.Revoke(req.Target)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.ok(w, r, res)
	})
	return mux
}

// ListenAdmin opens the admin socket at path with mode 0600, replacing a stale socket file
// (one no process answers on) but refusing to steal one in use.
func ListenAdmin(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("admin socket %s: another service answers on it: %w", path, ErrStoreLocked)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	// Bound in a fresh directory only we can enter, set to 0600, then moved into place: the
	// socket is never reachable with the umask's mode (as overlay's control socket).
	// The names are short: a socket path has room for 107 bytes.
	dir, err := os.MkdirTemp(filepath.Dir(path), ".s")
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return &unlinkOnClose{UnixListener: ln, path: path}, nil
}

// unlinkOnClose removes the socket file at its final path when the listener closes (the
// listener itself only knows the name it was bound under).
type unlinkOnClose struct {
	*net.UnixListener
	path string
	once sync.Once
}

func (l *unlinkOnClose) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() { os.Remove(l.path) })
	return err
}

// ServeAdmin serves AdminHandler(a) on ln until ctx is done.
func ServeAdmin(ctx context.Context, ln net.Listener, a Admin, logger *slog.Logger) error {
	hs := &http.Server{Handler: AdminHandler(a, logger), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		hs.Close()
	}()
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// AdminClient talks to a running service over its admin socket.
type AdminClient struct {
	hc *http.Client
}

// DialAdmin returns a client for the admin socket at path after checking that a service
// answers there.
func DialAdmin(path string) (*AdminClient, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	c.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &AdminClient{hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

func (c *AdminClient) do(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://admin"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		var e ErrorResponse
		if err := dec.Decode(&e); err != nil {
			return fmt.Errorf("admin socket: %s", resp.Status)
		}
		if s := ErrorForCode(e.Code); s != nil {
			return &remoteError{sentinel: s, msg: e.Message}
		}
		return fmt.Errorf("CA service: %s", e.Message)
	}
	return dec.Decode(out)
}

// remoteError carries the service's message and matches its sentinel with errors.Is.
type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// AddCIDR implements Admin.
func (c *AdminClient) AddCIDR(cidr CIDR) error {
	var out CIDR
	return c.do(http.MethodPost, "/admin/cidr", cidr, &out)
}

// Invite implements Admin.
func (c *AdminClient) Invite(r InviteRequest) (string, Identity, error) {
	var resp AdminInviteResponse
	if err := c.do(http.MethodPost, "/admin/invite", AdminInviteRequest(r), &resp); err != nil {
		return "", Identity{}, err
	}
	return resp.Token, Identity{Name: resp.Name, IP: resp.IP, IP6: resp.IP6, Groups: resp.Groups, CIDR: resp.CIDR, Subnets: resp.Subnets}, nil
}

// Inventory implements Admin.
func (c *AdminClient) Inventory() (Inventory, error) {
	var inv Inventory
	err := c.do(http.MethodGet, "/admin/inventory", nil, &inv)
	return inv, err
}

// Audit implements Admin.
func (c *AdminClient) Audit() ([]AuditEntry, error) {
	var es []AuditEntry
	err := c.do(http.MethodGet, "/admin/audit", nil, &es)
	return es, err
}

// Revoke implements Admin.
func (c *AdminClient) Revoke(target string) (RevokeResult, error) {
	var res RevokeResult
	err := c.do(http.MethodPost, "/admin/revoke", AdminRevokeRequest{Target: target}, &res)
	return res, err
}
