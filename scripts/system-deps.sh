#!/usr/bin/env bash
# The system packages DCodeX runs programs with: C and C++ compilers (which also build
# the sandbox helper), libseccomp's headers (the helper's system call filter), musl
# (the helper's static build: its start costs a tenth of glibc's), the
# Python 3 that runs user programs, Rust, Go and a JDK, and bubblewrap (only the benchmark
# uses it, as the yardstick for the sandbox's cost). Installs what is missing
# when run as root on a Debian-like system; otherwise says what to install.
set -euo pipefail
missing=()
command -v gcc >/dev/null || missing+=(gcc)
command -v g++ >/dev/null || missing+=(g++)
[ -f /usr/include/seccomp.h ] || missing+=(libseccomp-dev)
command -v musl-gcc >/dev/null || missing+=(musl-tools)
[ -x /usr/bin/python3 ] || missing+=(python3)
command -v bwrap >/dev/null || missing+=(bubblewrap)
# unshare and nsenter: `dcodex chaos disk-full` puts the JetStream store on a tmpfs of its own.
{ command -v unshare >/dev/null && command -v nsenter >/dev/null; } || missing+=(util-linux)
# Rust: the system's (Debian's rustc, which every user sees), or for a plain user its
# own rustup stable toolchain. Root installs the system's even beside a rustup of its
# own: root's toolchain is root's alone, and the next user to run DCodeX would find none.
# The examples judge a Rust solution.
[ -x /usr/bin/rustc ] \
  || { [ "$(id -u)" != 0 ] && compgen -G "$HOME/.rustup/toolchains/stable-*/bin/rustc" >/dev/null; } \
  || missing+=(rustc)
# Go and Java, two of the registry's languages (shared/languages/languages.toml).
command -v go >/dev/null || missing+=(golang-go)
{ command -v javac >/dev/null && command -v jar >/dev/null; } || missing+=(default-jdk-headless)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "DCodeX needs these system packages: ${missing[*]} (install them, then retry)" >&2
  exit 1
fi
