# vmtest's tools (see vmtest/ and kernels/kernels.json). udev: without it
# virtme-ng's guest has no /dev/virtio-ports links and fails.
APT_PKGS += qemu-system-x86 busybox-static udev kmod file python3-requests

# virtme-ng comes pinned and checksummed from Debian trixie (kernels.json "tools").
deps-extra::
	@$(GO) run ./vmtest/cmd/install-vng
