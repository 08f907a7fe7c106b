#!/usr/bin/env bash
# Runs one command as root in a throw-away Debian guest under qemu whose kernel has the
# unified cgroup hierarchy only (cgroup_no_v1=all): how DCodeX proves its cgroup v2
# layers on a real v2-only kernel (tests/test_vm_cgroup_v2.py).
#
# usage: scripts/vm-run.sh [--share DIR]... [--cwd DIR] [--mem MB] [--cpus N]
#                          [--timeout S] [--env K=V]... -- COMMAND [ARG...]
#        scripts/vm-run.sh --build           (only prepare the cached guest)
#
# - The guest has NO network device. Each --share DIR is mounted over 9p at the same
#   path inside; COMMAND starts in --cwd (default: the first share).
# - COMMAND's stdout and stderr come back on our stdout, its exit status is ours;
#   this script's own failures exit 125 (124: --timeout).
# - KVM is used only where the CPU really has vmx/svm; otherwise qemu emulates (TCG),
#   where a guest boots in a few seconds and CPU-bound work is 15-30x slower.
# - The guest (debootstrap'ed root file system, kernel, initramfs) is built once into
#   $DCODEX_BUILD_CACHE/vm (default ~/.cache/dcodex-build/vm) and reused; every run
#   starts from it pristine (qemu snapshot=on), so runs may go in parallel.
# Host packages: qemu-system-x86 debootstrap e2fsprogs busybox-static xz-utils cpio
# util-linux (scripts/container-deps.sh, `make container-deps`, installs them; util-linux
# comes with scripts/system-deps.sh).
set -uo pipefail

RECIPE=1
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${DCODEX_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dcodex-build}/vm
PACKAGES="linux-image-amd64 kmod busybox-static procps util-linux python3 python3-venv gcc g++ libc6-dev libseccomp-dev"
MODULES="virtio_mmio virtio_blk virtio_console ext4 9pnet_virtio 9p"

fail() { echo "vm-run: $*" >&2; exit 125; }

mem=2048
cpus=$(nproc); [ "$cpus" -gt 4 ] && cpus=4
timeout=900
cwd=""
shares=()
envs=()
build_only=0
while [ $# -gt 0 ]; do
  case $1 in
    --share) shares+=("$(cd "${2:?}" && pwd -P)") || fail "no directory $2"; shift 2 ;;
    --cwd) cwd=${2:?}; shift 2 ;;
    --mem) mem=${2:?}; shift 2 ;;
    --cpus) cpus=${2:?}; shift 2 ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    --env) envs+=("${2:?}"); shift 2 ;;
    --build) build_only=1; shift ;;
    --) shift; break ;;
    *) fail "unknown option $1 (see the header of $0)" ;;
  esac
done
[ "$build_only" = 1 ] || [ $# -gt 0 ] || fail "no command (put it after --)"
[ "$(id -u)" = 0 ] || fail "needs root (debootstrap, and 9p shares that write any file)"
missing=()
for tool in qemu-system-x86_64:qemu-system-x86 debootstrap:debootstrap mkfs.ext4:e2fsprogs \
            xz:xz-utils cpio:cpio flock:util-linux; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
[ -x /bin/busybox ] || missing+=(busybox-static)
[ ${#missing[@]} -eq 0 ] || fail "missing host packages: ${missing[*]} (make container-deps installs them)"

# --- the guest, built once --------------------------------------------------------
stamp="recipe=$RECIPE suite=$SUITE mirror=$MIRROR packages=$PACKAGES modules=$MODULES"

build_guest() {
  local root=$CACHE/root.partial version offset
  rm -rf "$root" "$CACHE"/{root,disk.img,vmlinux,initrd.gz,stamp}
  echo "vm-run: building the guest in $CACHE (once, a few minutes)" >&2
  debootstrap --variant=minbase --include="${PACKAGES// /,}" "$SUITE" "$root" "$MIRROR" \
    >"$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; fail "debootstrap failed"; }
  rm -f "$root"/var/cache/apt/archives/*.deb "$root"/boot/initrd.img-*
  echo dcodex-vm >"$root/etc/hostname"
  printf '127.0.0.1 localhost dcodex-vm\n::1 localhost\n' >"$root/etc/hosts"
  version=$(ls "$root/lib/modules" | sort -V | tail -1)
  [ -n "$version" ] || fail "the guest has no kernel"
  # qemu boots an uncompressed ELF kernel through its PVH entry: the guest skips its
  # own decompression, seconds under emulation.
  offset=$(LC_ALL=C grep -aobP '\xfd7zXZ\x00' "$root/boot/vmlinuz-$version" | head -1 | cut -d: -f1)
  [ -n "$offset" ] || fail "cannot find the xz payload of vmlinuz-$version"
  tail -c +$((offset + 1)) "$root/boot/vmlinuz-$version" | xz -dc >"$CACHE/vmlinux" 2>/dev/null
  [ "$(head -c 4 "$CACHE/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || fail "no ELF kernel in vmlinuz-$version"
  build_initrd "$root" "$version"
  mkfs.ext4 -q -F -L dcodex-vm -d "$root" "$CACHE/disk.img" 4G >"$CACHE/mkfs.log" 2>&1 \
    || { cat "$CACHE/mkfs.log" >&2; fail "mkfs.ext4 failed"; }
  rm -rf "$root"
  echo "$stamp" >"$CACHE/stamp"
}

build_initrd() {  # ROOT VERSION: busybox, the modules for the disk, console and 9p
  local root=$1 version=$2 dir=$CACHE/initrd module
  rm -rf "$dir"; mkdir -p "$dir"/{bin,dev,proc,sys,root,modules}
  cp /bin/busybox "$dir/bin/busybox"
  for module in $MODULES; do
    chroot "$root" modprobe -S "$version" --show-depends "$module" || fail "no module $module"
  done | awk '$1 == "insmod" && !seen[$2]++ {print $2}' | while read -r module; do
    cp "$root$module" "$dir/modules/" && basename "$module" >>"$dir/modules/order"
  done
  cat >"$dir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod /modules/$m 2>/dev/null; done
n=0; while [ ! -b /dev/vda ] && [ $n -lt 400 ]; do usleep 25000; n=$((n + 1)); done
mount -t ext4 -o rw,noatime /dev/vda /root || { echo "initrd: no root disk" >/dev/ttyS0; poweroff -f; }
mount -t tmpfs -o mode=755 tmpfs /root/run && mkdir -p /root/run/control
mount -t 9p -o trans=virtio,version=9p2000.L,cache=none control /root/run/control
umount /proc /sys; mount --move /dev /root/dev
exec switch_root /root /bin/bash /run/control/init
INIT
  chmod +x "$dir/init"
  (cd "$dir" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$CACHE/initrd.gz" || fail "cpio failed"
  rm -rf "$dir"
}

mkdir -p "$CACHE" || fail "cannot create $CACHE"
exec 9>>"$CACHE/.lock"
flock -x 9
if [ "$(cat "$CACHE/stamp" 2>/dev/null)" != "$stamp" ]; then build_guest; fi
flock -s 9  # runs share the guest; a rebuild waits for them
[ "$build_only" = 1 ] && exit 0

# --- one run ------------------------------------------------------------------------
run=$(mktemp -d "$CACHE/run.XXXXXX") || fail "cannot make a run directory"
control=$run/control; mkdir -p "$control"
qemu_pid=""
trap '[ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null; rm -rf "$run"' EXIT
printf '%s\0' "$@" >"$control/argv"
for pair in "${envs[@]+"${envs[@]}"}"; do
  [[ $pair =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || fail "--env wants NAME=VALUE, not $pair"
  printf 'export %q\n' "$pair"
done >"$control/env"
devices=()
index=0
for dir in "${shares[@]+"${shares[@]}"}"; do
  devices+=(-fsdev "local,id=share$index,path=$dir,security_model=none,multidevs=remap"
            -device "virtio-9p-device,fsdev=share$index,mount_tag=share$index")
  printf 'share%d %q\n' "$index" "$dir" >>"$control/shares"
  index=$((index + 1))
done
touch "$control/shares"
printf '%s\n' "${cwd:-${shares[0]:-/root}}" >"$control/cwd"

# pid 1 of the guest: the file systems a Debian system has (cgroup2 only), the shares,
# then COMMAND with its output on the virtio console; its status goes back in control/.
cat >"$control/init" <<'INIT'
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
stop() { echo "${1:-125}" >/run/control/status; sync; echo o >/proc/sysrq-trigger; sleep 10; }
mount -t proc proc /proc; mount -t sysfs sysfs /sys
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || { echo "no cgroup2" >/dev/hvc0; stop; }
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts && ln -sf pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777 tmpfs /dev/shm; mount -t tmpfs -o mode=1777 tmpfs /tmp
ln -sf /proc/self/fd /dev/fd
hostname dcodex-vm; busybox ip link set lo up
stty -F /dev/hvc0 raw -echo 2>/dev/null
while read -r tag dir; do
  eval "dir=$dir"
  mkdir -p "$dir" && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=mmap "$tag" "$dir" \
    || { echo "cannot mount $dir" >/dev/hvc0; stop; }
done </run/control/shares
cd "$(cat /run/control/cwd)" || stop
mapfile -d '' -t argv </run/control/argv
(. /run/control/env; exec "${argv[@]}") </dev/null >/dev/hvc0 2>&1
stop $?
INIT

accel=(-accel tcg,thread=multi -cpu max)
append="console=ttyS0 panic=-1 cgroup_no_v1=all mitigations=off tsc=reliable quiet loglevel=3"
if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then
  accel=(-accel kvm -cpu host)
else
  # microvm has no HPET: on a busy host the guest's TSC calibration can fail and hang
  # the boot. Under TCG the guest's TSC is the host's, so pass its rate.
  khz=$(awk -F: '/^cpu MHz/ {printf "%d", $2 * 1000; exit}' /proc/cpuinfo)
  [ -n "$khz" ] && append="$append tsc_early_khz=$khz"
fi
mkdir -p "$run/tmp"
TMPDIR=$run/tmp timeout -k 5 "$timeout" qemu-system-x86_64 -nodefaults -no-user-config \
  -machine microvm,isa-serial=on,rtc=on "${accel[@]}" -m "$mem" -smp "$cpus" \
  -display none -monitor none -nic none -no-reboot \
  -kernel "$CACHE/vmlinux" -initrd "$CACHE/initrd.gz" -append "$append" \
  -drive "id=root,if=none,file=$CACHE/disk.img,format=raw,snapshot=on,cache=unsafe" \
  -device virtio-blk-device,drive=root \
  -fsdev "local,id=control,path=$control,security_model=none,multidevs=remap" \
  -device virtio-9p-device,fsdev=control,mount_tag=control \
  "${devices[@]+"${devices[@]}"}" \
  -chardev "file,id=log,path=$control/console.log" -serial chardev:log \
  -device virtio-serial-device -chardev stdio,id=out,signal=off -device virtconsole,chardev=out \
  </dev/null 2>"$run/qemu.err" &
qemu_pid=$!
wait "$qemu_pid"; code=$?; qemu_pid=""
[ -f "$control/status" ] && exit "$(cat "$control/status")"
if [ $code -eq 124 ] || [ $code -eq 137 ]; then
  echo "vm-run: timed out after $timeout s" >&2; status=124
else
  echo "vm-run: the guest stopped without a status (qemu exit $code)" >&2; status=125
fi
cat "$run/qemu.err" >&2; tail -40 "$control/console.log" >&2
exit $status
