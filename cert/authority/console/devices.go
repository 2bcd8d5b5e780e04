package console

import (
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/meshnode/meshnode/cert/authority"
)

type deviceView struct {
	CIDRs  []string
	Name   string
	CIDR   string
	IP     string
	Groups string
	Key    string
	// The device's current certificate:
	Host    authority.Host
	CertPEM string
	CAPEM   string
	CertQR  template.URL
	CAQR    template.URL
	Revoked int
}

func (c *Console) deviceForm(w http.ResponseWriter, r *http.Request, se session) {
	p := c.base(se, "Add a phone or laptop", "device")
	p.Data = deviceView{CIDRs: c.cidrNames()}
	c.render(w, http.StatusOK, "device_new.html", p)
}

// publicKeyField is the pasted key, or the uploaded device.pub file when nothing was pasted.
func publicKeyField(r *http.Request, field, file string) []byte {
	if k := strings.TrimSpace(r.PostFormValue(field)); k != "" {
		return []byte(k)
	}
	f, _, err := r.FormFile(file)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 4<<10))
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	return b
}

func (c *Console) deviceAdd(w http.ResponseWriter, r *http.Request, se session) {
	p := c.base(se, "Add a phone or laptop", "device")
	v := deviceView{CIDRs: c.cidrNames(), Name: strings.TrimSpace(r.PostFormValue("name")), CIDR: r.PostFormValue("cidr"),
		IP: strings.TrimSpace(r.PostFormValue("ip")), Groups: r.PostFormValue("groups"), Key: r.PostFormValue("public_key")}
	p.Data = v
	key := publicKeyField(r, "public_key", "public_key_file")
	if key == nil {
		c.failed(w, "device_new.html", p, fmt.Errorf("%w: %w", authority.ErrBadKey, errNoKey))
		return
	}
	req := authority.DeviceRequest{Name: v.Name, CIDR: v.CIDR, Groups: splitGroups(v.Groups), PublicKey: key, Lifetime: c.o.DeviceCert}
	if v.IP != "" {
		ip, err := netip.ParseAddr(v.IP)
		if err != nil {
			c.failed(w, "device_new.html", p, fmt.Errorf("%w: address %q: leave it empty for the next free one", authority.ErrMalformed, v.IP))
			return
		}
		req.IP = ip
	}
	if _, err := c.a.IssueDevice(req, se.admin); err != nil {
		c.failed(w, "device_new.html", p, err)
		return
	}
	http.Redirect(w, r, "/devices/show?host="+url.QueryEscape(v.Name), http.StatusSeeOther)
}

func (c *Console) deviceReissue(w http.ResponseWriter, r *http.Request, se session) {
	p := c.base(se, "Re-issue a device", "device")
	name := r.PostFormValue("host")
	req := authority.DeviceRequest{Name: name, Reissue: true, Lifetime: c.o.DeviceCert,
		PublicKey: publicKeyField(r, "public_key", "public_key_file")}
	res, err := c.a.IssueDevice(req, se.admin)
	if err != nil {
		p.Data = deviceView{Name: name}
		c.failed(w, "device_show.html", p, err)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/devices/show?host=%s&revoked=%d", url.QueryEscape(name), len(res.Revoked)), http.StatusSeeOther)
}

func (c *Console) deviceShow(w http.ResponseWriter, r *http.Request, se session) {
	p := c.base(se, "Import on the device", "device")
	name := r.URL.Query().Get("host")
	h, pemText, err := c.a.DeviceCertPEM(name)
	if err == nil && h.Kind != authority.KindDevice {
		err = fmt.Errorf("%w: %s joined with a token, not as a device", authority.ErrNotFound, name)
	}
	if err != nil {
		p.Data = deviceView{Name: name}
		c.failed(w, "device_show.html", p, err)
		return
	}
	v := deviceView{Name: name, Host: h, CertPEM: string(pemText), CAPEM: string(c.a.Bundle())}
	fmt.Sscan(r.URL.Query().Get("revoked"), &v.Revoked)
	if v.CertQR, err = qrDataURI(v.CertPEM); err == nil {
		v.CAQR, err = qrDataURI(v.CAPEM)
	}
	if err != nil {
		c.failed(w, "device_show.html", p, err)
		return
	}
	p.Data = v
	c.render(w, http.StatusOK, "device_show.html", p)
}

func (c *Console) deviceSite(w http.ResponseWriter, r *http.Request, se session) {
	name := r.URL.Query().Get("host")
	h, pemText, err := c.a.DeviceCertPEM(name)
	if err != nil {
		p := c.base(se, "Import on the device", "device")
		p.Data = deviceView{Name: name}
		c.failed(w, "device_show.html", p, err)
		return
	}
	b, err := SiteYAML(pemText, c.a.Bundle(), c.a.Lighthouses())
	if err != nil {
		c.refuse(w, r, http.StatusInternalServerError, "Internal error.")
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", h.Name+".yml"))
	w.Write(b)
}

// The site file: Nebula's config keys, in the order people read them.
type siteFile struct {
	PKI struct {
		CA   string `yaml:"ca"`
		Cert string `yaml:"cert"`
	} `yaml:"pki"`
	StaticHostMap map[string][]string `yaml:"static_host_map"`
	Lighthouse    struct {
		AmLighthouse bool     `yaml:"am_lighthouse"`
		Interval     int      `yaml:"interval"`
		Hosts        []string `yaml:"hosts"`
	} `yaml:"lighthouse"`
	Listen struct {
		Host string `yaml:"host"`
		Port int    `yaml:"port"`
	} `yaml:"listen"`
	Punchy struct {
		Punch   bool `yaml:"punch"`
		Respond bool `yaml:"respond"`
	} `yaml:"punchy"`
	Firewall struct {
		Outbound []rule `yaml:"outbound"`
		Inbound  []rule `yaml:"inbound"`
	} `yaml:"firewall"`
}

type rule struct {
	Port  string `yaml:"port"`
	Proto string `yaml:"proto"`
	Host  string `yaml:"host"`
}

// SiteYAML is a Nebula config for a device: its certificate, the CAs, the lighthouses and a
// firewall that lets the device reach the mesh and answer pings but accepts no other
// connection (a phone serves nothing). pki.key is left out: the key never left the device,
// whose app adds it.
func SiteYAML(certPEM, caPEM []byte, lhs []authority.Lighthouse) ([]byte, error) {
	var s siteFile
	s.PKI.CA, s.PKI.Cert = string(caPEM), string(certPEM)
	s.StaticHostMap = map[string][]string{}
	s.Lighthouse.Interval = 60
	s.Lighthouse.Hosts = []string{}
	for _, l := range lhs {
		ip := l.VpnIP.Unmap().String()
		s.StaticHostMap[ip] = append(s.StaticHostMap[ip], l.Addrs...)
		s.Lighthouse.Hosts = append(s.Lighthouse.Hosts, ip)
	}
	s.Listen.Host, s.Listen.Port = "0.0.0.0", 0
	s.Punchy.Punch, s.Punchy.Respond = true, true
	s.Firewall.Outbound = []rule{{Port: "any", Proto: "any", Host: "any"}}
	s.Firewall.Inbound = []rule{{Port: "any", Proto: "icmp", Host: "any"}}
	return yaml.Marshal(&s)
}
