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
            memcached nutcracker ca-certificates xz-utils shellcheck
-include vmtest/deps.mk

TESTFLAGS ?=
# Where test runs leave their logs and reports: host.log for the host-kernel
# tests; per kernel K, K/ with report.md, report.json, junit.xml, the guest's
# kernel log and test.log; the merged report.md/report.json at the top.
RESULTS   ?= $(CURDIR)/results
KERNEL    ?=
# How test-kernel's guests boot: direct (vmtest's own init) or vng
# (virtme-ng); results of a vng run go to $(RESULTS)/$(KERNEL)-vng/.
BACKEND   ?= direct
JOB        = $(KERNEL)$(if $(filter-out direct,$(BACKEND)),-$(BACKEND))
# Kernels run side by side by 'make test' (each a process of its own, as CI
# runs them; vmtest caps VMs at one per core machine-wide anyway).
JOBS      ?= $(shell nproc)
LAB       := bin/lab

.PHONY: all deps generate check-generate build test test-host test-kernel test-kernels report vet bench clean
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

# Everything, sharded as CI shards it: the host-kernel tests, then one
# process per pinned kernel (JOBS at a time), then the merged report.
# Needs root (BPF, namespaces, QEMU). Goes on after a failure, so one run
# shows every failure; prints a summary at the end.
test: deps build vet
	@rc=0; \
	$(MAKE) --no-print-directory test-host || rc=1; \
	$(MAKE) --no-print-directory test-kernels || rc=1; \
	$(MAKE) --no-print-directory report || rc=1; \
	echo "== summary =="; \
	grep -hE '^(ok|FAIL|---|panic:)' $(RESULTS)/host.log $(RESULTS)/*/test.log 2>/dev/null | grep -v '^--- PASS'; \
	exit $$rc

# The tests that need no VM, on the running kernel, and tests/ but its
# kernel matrix (the workflow's lint, the driver's parts): CI's fast job.
test-host:
	@mkdir -p $(RESULTS)
	@set -o pipefail; rc=0; { \
	  XDPLAB_KERNELS=host $(GO) test -count=1 -timeout 30m $(TESTFLAGS) ./lab/... ./kernels/... ./vmtest/... || rc=1; \
	  XDPLAB_KERNELS=host $(GO) test -count=1 $(TESTFLAGS) ./tests -skip TestMatrix || rc=1; \
	  exit $$rc; } 2>&1 | tee $(RESULTS)/host.log

# One kernel, as one CI job runs it: fetch it (progress shows; go test
# would hold it back), vmtest's boot checks (both backends; once per kernel,
# so only with BACKEND=direct) and the matrix suites in that kernel.
# Writes $(RESULTS)/$(JOB)/.
test-kernel:
	@[ -n "$(KERNEL)" ] || { echo "make test-kernel: say which kernel: KERNEL=NAME (pinned: $$($(GO) run ./lab/cmd/lab kernels list --names | paste -sd' '))"; exit 2; }
	@mkdir -p $(RESULTS)/$(JOB)
	@set -o pipefail; rc=0; { \
	  $(GO) run ./lab/cmd/lab kernels fetch $(KERNEL) || exit 1; \
	  if [ "$(BACKEND)" = direct ]; then XDPLAB_KERNELS=$(KERNEL) $(GO) test -count=1 -timeout 30m $(TESTFLAGS) ./vmtest || rc=1; fi; \
	  $(GO) test -count=1 -timeout 60m $(TESTFLAGS) ./tests -kernels $(KERNEL) -backend $(BACKEND) -report $(RESULTS)/$(JOB) || rc=1; \
	  exit $$rc; } 2>&1 | tee $(RESULTS)/$(JOB)/test.log

# Every CI kernel job (each pinned kernel, and the newest through virtme-ng
# too: lab kernels list --jobs), JOBS processes at a time; fails if any did.
test-kernels: build
	@$(LAB) kernels list --jobs | xargs -P $(JOBS) -L 1 $(MAKE) --no-print-directory test-kernel

# The per-kernel reports merged into $(RESULTS)/report.md and report.json;
# fails if a pinned kernel failed or has no report.
report: build
	@$(LAB) report merge -pinned -o $(RESULTS) $$(ls -d $(RESULTS)/*/ 2>/dev/null)

# Benchmarks; needs root (BPF, namespaces). The XDP program alone through
# BPF_PROG_TEST_RUN (lab/kv BenchmarkXDP*), the store vs memcached over veth
# pairs (BenchmarkVethStoreVsMemcached, tuned by XDPLAB_BENCH_* variables),
# the codec. Output, with the comparison tables, goes to bench.log too.
bench:
	@set -o pipefail; $(GO) test -run '^$$' -bench . -benchtime 2s -timeout 30m ./lab/... 2>&1 | tee bench.log

clean:
	rm -rf bin results bench.log
