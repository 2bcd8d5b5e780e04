package overlay

// CheckRoutes checks tun.routes and tun.unsafe_routes against the host's certificate, as
// New does, so `meshnode -test` refuses what the daemon would refuse at start (LoadConfig
// alone cannot: whether a route lies inside the overlay depends on the certificate).
func CheckRoutes(c *Config, p *PKI) error {
	own := p.Creds.Cert
	_, err := parseRoutes(&c.Tun, own.Details.Ips[0].Masked(), own.VpnIP())
	return err
}
