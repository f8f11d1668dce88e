package reflector

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -go-package reflector -type rf_scratch reflect ../../../bpf/reflect.bpf.c -- -O2 -g -Wall -Werror -I../../../bpf/include -I/usr/include/x86_64-linux-gnu
