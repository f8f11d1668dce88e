package kv

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package kv -type kv_val -type kv_stats -type kv_ctl -type kv_ctl_op -type kv_ctl_cond -type kv_ctl_result -type kv_limit -type xdp_action kv ../../bpf/kv.bpf.c -- -O2 -g -Wall -Werror -I../../bpf/include -I/usr/include/x86_64-linux-gnu
