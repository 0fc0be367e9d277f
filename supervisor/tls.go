package supervisor

// startTLS opens the HTTPS listener of [deployer] tls_listen, if set.
func (d *Daemon) startTLS() (*publicServer, error) {
	return nil, nil
}
