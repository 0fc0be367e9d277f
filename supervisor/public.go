package supervisor

import (
	"net/http"

	"github.com/deployer/deployer/proxy"
)

// proxyOptions are the proxy's settings for cfg.
func (d *Daemon) proxyOptions(cfg *Config) proxy.Options {
	return proxy.Options{
		Logger:         d.log,
		TrustedProxies: cfg.Deployer.Public.TrustedProxies,
	}
}

// publicHandler is what the public listeners (plain and TLS) serve.
func (d *Daemon) publicHandler() http.Handler { return d.proxy }
