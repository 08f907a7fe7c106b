#!/usr/bin/env bash
# What the container and VM tests (and `make image`) need on the machine: docker.io
# (dockerd, the docker client, containerd, runc), debootstrap (the base image and the
# guest), qemu and the tools that make a guest (scripts/vm-run.sh), and Debian's copy of
# Docker's default seccomp profile (scripts/seccomp-profile.py starts from it).
# Installs what is missing when run as root on a Debian-like system; otherwise says
# what to install and fails, so that a machine without them says so at once.
set -euo pipefail
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
command -v cpio >/dev/null || missing+=(cpio)
command -v xz >/dev/null || missing+=(xz-utils)
[ -x /bin/busybox ] || missing+=(busybox-static)
[ -f /usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json ] \
  || missing+=(golang-github-docker-docker-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "the container and VM tests need these packages: ${missing[*]}" \
    "(install them, or run pytest -m 'not containers and not vm')" >&2
  exit 1
fi
