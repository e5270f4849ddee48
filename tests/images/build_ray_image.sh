#!/usr/bin/env bash
# Build a Ray image locally, without any container registry: a minimal Debian (debootstrap)
# with its python3, Ray installed with pip into /opt/ray, imported with `docker import`.
#
#   tests/images/build_ray_image.sh [TAG]
#
# The Python minor version must match the host's (the wheels pip picks are the host's), so
# the default tag names both: lanray-ray:2.60.0-py3.11. An image with that tag is reused.
# The tag is printed on the last line of the output. Root only (debootstrap, docker import).
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
RAY_VERSION=${RAY_VERSION:-$("$PY" -c 'from importlib.metadata import version; print(version("ray"))')}
PYV=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
TAG=${1:-lanray-ray:${RAY_VERSION}-py${PYV}}

say() { echo "build_ray_image.sh: $*" >&2; }

if docker image inspect "$TAG" >/dev/null 2>&1; then
  say "reusing $TAG"
  echo "$TAG"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  say "building an image needs root (debootstrap)"
  exit 1
fi
command -v debootstrap >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

work=$(mktemp -d /var/tmp/lanray-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
t0=$(date +%s)

say "debootstrap $SUITE (minbase, python3)"
debootstrap --variant=minbase --include=python3,ca-certificates,procps "$SUITE" "$root" "$MIRROR" \
  >"$work/debootstrap.log" 2>&1 || {
  tail -n 5 "$work/debootstrap.log" >&2
  exit 1
}
guest=$(chroot "$root" python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if [ "$guest" != "$PYV" ]; then
  say "$SUITE has Python $guest but the host's is $PYV: the wheels would not fit"
  exit 1
fi

say "pip install ray[default]==$RAY_VERSION into /opt/ray"
"$PY" -m pip install --no-warn-script-location --disable-pip-version-check \
  --target "$root/opt/ray" "ray[default]==$RAY_VERSION" >"$work/pip.log" 2>&1 || {
  grep -iE "error" "$work/pip.log" | tail -n 5 >&2
  exit 1
}
# pip wrote the host interpreter's path into each script's shebang
for f in "$root"/opt/ray/bin/*; do
  if [ -f "$f" ] && head -c 2 "$f" | grep -q '#!'; then
    sed -i '1s|^#!.*python.*$|#!/usr/bin/python3|' "$f"
  fi
done
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/root/.cache

say "docker import $TAG"
tar -C "$root" -c . | docker import \
  --change "ENV PATH=/opt/ray/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change "ENV PYTHONPATH=/opt/ray" \
  --change "ENV LANG=C.UTF-8" \
  --change 'CMD ["ray", "--version"]' \
  - "$TAG" >/dev/null
say "built $TAG in $(($(date +%s) - t0)) s ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "$TAG"
