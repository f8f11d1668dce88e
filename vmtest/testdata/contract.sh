#!/bin/sh
# The guest contract (see vmtest's package doc), checked from inside a guest:
# one line per item, "ok ITEM detail" or "FAIL ITEM detail". The test that
# runs it also fails on an item that printed nothing.

check() { # ITEM DETAIL COMMAND...
	item=$1 detail=$2
	shift 2
	if out=$("$@" 2>&1); then echo "ok $item $detail"; else echo "FAIL $item $detail: $(echo "$out" | tail -n 3 | tr '\n' ' ')"; fi
}

fstype() { # PATH WANT: PATH is a mount point of type WANT
	got=$(stat -f -c %T "$1") || return 1
	[ "$got" = "$2" ] || { echo "$1 is $got, want $2"; return 1; }
	grep -q " $1 " /proc/mounts || { echo "$1 is not a mount point"; return 1; }
}

check bpffs /sys/fs/bpf fstype /sys/fs/bpf bpf_fs
check tracefs /sys/kernel/tracing fstype /sys/kernel/tracing tracefs
check debugfs /sys/kernel/debug fstype /sys/kernel/debug debugfs
check cgroup2 /sys/fs/cgroup fstype /sys/fs/cgroup cgroup2fs
shm() { fstype /dev/shm tmpfs && echo x > /dev/shm/xdplab-contract && rm /dev/shm/xdplab-contract; }
check devshm /dev/shm shm

# The running kernel's own config, as Debian installs it: its header names
# the version `uname -v` names.
kver() {
	f=/boot/config-$(uname -r)
	[ -f "$f" ] || { echo "no $f"; return 1; }
	grep -q '^CONFIG_BPF_SYSCALL=y' "$f" || { echo "$f lacks CONFIG_BPF_SYSCALL=y"; return 1; }
	v=$(sed -n 's/^# Linux\/[^ ]* \([^ ]*\) Kernel Configuration$/\1/p' "$f" | head -n 1)
	[ -n "$v" ] && uname -v | grep -q "$v" || { echo "$f is for '$v', uname -v is '$(uname -v)'"; return 1; }
}
check kconfig "/boot/config-$(uname -r)" kver

# Its modules, for modprobe: veth is a module in every pinned kernel.
check modules "modprobe veth" sh -c 'modprobe veth && grep -q "^veth " /proc/modules'

# User namespaces as on a normal boot: a child in new user, mount and PID
# namespaces that mounts its own /proc (what cilium/ebpf's token tests do).
check userns "unshare -Urmpf --mount-proc" unshare --user --map-root-user --mount --pid --fork --mount-proc sh -c 'test "$(cat /proc/self/stat | cut -d" " -f1)" -ge 1 && mount -t tmpfs none /mnt'

check tmp "/tmp writable" sh -c 'd=$(mktemp -d) && echo x > "$d/f" && rm -r "$d"'
lo() {
	f=$(cat /sys/class/net/lo/flags) && [ $((f & 1)) = 1 ] || { echo "lo is down (flags $f)"; return 1; }
	ip -o addr show dev lo | grep -q 'inet 127.0.0.1/8' || { echo "lo has no 127.0.0.1/8"; return 1; }
}
check loopback "lo up" lo
check devfd "/dev/fd" sh -c 'test -e /dev/fd/1 && test -e /dev/stdout'
check hostfs "host tree read-only at its paths" sh -c "test -f '$0'"
# The host's /var/log directories, writable: services open their logs there.
varlog() {
	for d in $XDPLAB_HOST_LOG_DIRS; do
		[ -d "/var/log/$d" ] || { echo "no /var/log/$d"; return 1; }
	done
	f=/var/log/xdplab-contract.$$ && echo x > "$f" && rm "$f"
}
check varlog "the host's /var/log directories" varlog
exit 0
