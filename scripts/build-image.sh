#!/usr/bin/env bash
# `make image`: builds deploy/docker/Dockerfile as dcodex:VERSION (or TAG).
#
# usage: scripts/build-image.sh [TAG]
# env:   DOCKER        the docker client command (e.g. "docker -H unix:///run/other.sock")
#        DEBIAN_IMAGE  the base image; default debian:bookworm-slim. Where that can't be
#                      had (no registry reachable), the base is built here instead with
#                      debootstrap + docker import (scripts/base-image.sh), carrying
#                      this host's CA certificates, and used.
#        DOCKER_BUILDKIT  1 or 0 picks BuildKit or the legacy builder; default: BuildKit
#                      where the client has buildx, else the legacy builder.
# Builds on the host network: the build reaches the Debian mirror and PyPI as the host
# does, and needs no bridge.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
tag=${1:-dcodex:$version}
read -r -a docker <<<"${DOCKER:-docker}"
command -v "${docker[0]}" >/dev/null || {
  echo "build-image: no docker client (scripts/container-deps.sh installs docker.io)" >&2
  exit 1
}
base=${DEBIAN_IMAGE:-debian:bookworm-slim}
if ! "${docker[@]}" image inspect "$base" >/dev/null 2>&1 \
   && ! timeout 120 "${docker[@]}" pull "$base" >/dev/null 2>&1; then
  echo "build-image: $base cannot be pulled; building the base with debootstrap" >&2
  base=dcodex-base:bookworm
  DOCKER="${docker[*]}" ./scripts/base-image.sh "$base"
fi
# BuildKit where the client has it (buildx, or a client before 23 with it built in);
# else the legacy builder, which reads the root .dockerignore.
if [ -z "${DOCKER_BUILDKIT:-}" ]; then
  if "${docker[@]}" buildx version >/dev/null 2>&1; then export DOCKER_BUILDKIT=1; else export DOCKER_BUILDKIT=0; fi
fi
"${docker[@]}" build --network host \
  --build-arg "DEBIAN_IMAGE=$base" -f deploy/docker/Dockerfile -t "$tag" .
echo "build-image: $tag (base $base)" >&2
