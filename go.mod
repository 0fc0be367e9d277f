module github.com/deployer/deployer

go 1.26.0

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/cloudflare/tableflip v1.2.3 // indirect
	github.com/coder/websocket v1.8.15 // indirect
	github.com/fsnotify/fsnotify v1.10.1 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
