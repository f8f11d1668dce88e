package proxy

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package proxy -type proxy_backend -type proxy_ring -type proxy_addr -type proxy_flow -type proxy_stats -type proxy_backend_stats -type proxy_limit -type xdp_action proxy ../../bpf/proxy.bpf.c -- -O2 -g -Wall -Werror -I../../bpf/include -I/usr/include/x86_64-linux-gnu
