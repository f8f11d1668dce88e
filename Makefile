# xdplab: see README.md. Everything that needs root says so in the README.
SHELL := /bin/bash
GO    ?= go
CLANG ?= clang-19
STRIP ?= llvm-strip-19
# The compiler flags live in each package's //go:generate line only, so that
# `make generate` and a plain `go generate` make the same bytes (an -I given
# here as well would change the header paths in the objects' line info).
export BPF2GO_CC := $(CLANG)
export BPF2GO_STRIP := $(STRIP)

# Debian 12 packages that building and testing need. Other parts of the tree
# append to APT_PKGS in their own fragments.
APT_PKGS := clang-19 llvm-19 libbpf-dev linux-libc-dev libc6-dev gcc make iproute2 \
            memcached nutcracker ca-certificates xz-utils
-include vmtest/deps.mk

TESTFLAGS ?=
TESTLOG   ?= test.log

.PHONY: all deps generate check-generate build test vet bench clean
all: build

# Idempotent: asks apt only for what dpkg does not already have.
deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  [ "$$(id -u)" = 0 ] || { echo "make deps: apt needs root; run: sudo make deps"; exit 1; }; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "deps: all $(words $(APT_PKGS)) packages present"; fi
	@$(MAKE) --no-print-directory deps-extra

deps-extra::
	@true

generate:
	$(GO) generate ./...

# Fails when the committed generated files differ from what the pinned clang makes.
check-generate: generate
	@git diff --exit-code --stat -- '*_bpfel.go' '*_bpfel.o' || { echo "generated BPF files are stale: run 'make generate' and commit"; exit 1; }

build:
	$(GO) build -o bin/lab ./lab/cmd/lab

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

# The whole suite. Needs root (BPF, namespaces). Prints a summary at the end.
test: deps build vet
	@set -o pipefail; $(GO) test -count=1 -timeout 60m $(TESTFLAGS) ./... 2>&1 | tee $(TESTLOG); rc=$$?; \
	echo "== summary =="; grep -E '^(ok|FAIL|---|panic:|\?)' $(TESTLOG) | grep -v '^--- PASS' ; exit $$rc

# Benchmarks; needs root (BPF, namespaces). The XDP program alone through
# BPF_PROG_TEST_RUN (lab/kv BenchmarkXDP*), the store vs memcached over veth
# pairs (BenchmarkVethStoreVsMemcached, tuned by XDPLAB_BENCH_* variables),
# the codec. Output, with the comparison tables, goes to bench.log too.
bench:
	@set -o pipefail; $(GO) test -run '^$$' -bench . -benchtime 2s -timeout 30m ./lab/... 2>&1 | tee bench.log

clean:
	rm -rf bin $(TESTLOG) bench.log
