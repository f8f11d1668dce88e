module github.com/xdplab/xdplab

go 1.26.8

require (
	github.com/cilium/ebpf v0.22.0
	github.com/hashicorp/go-multierror v1.1.1
	github.com/vishvananda/netlink v1.3.1
	github.com/vishvananda/netns v0.0.5
	golang.org/x/net v0.48.0
	golang.org/x/sys v0.43.0
)

require (
	github.com/hashicorp/errwrap v1.0.0 // indirect
	go.yaml.in/yaml/v3 v3.0.6 // indirect
)

tool github.com/cilium/ebpf/cmd/bpf2go
