#!/usr/bin/env bash
# Build the UVm benchmark peers: bash benchmarks/peers/build.sh OUTDIR
# Compiles every peer with the system cc into OUTDIR, skipping binaries newer than
# their sources. Installs libsigsegv-dev if needed; if that fails, fault_libsigsegv
# is skipped (with a message on stderr) and the build still succeeds.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
cflags=(-O2 -Wall -Wextra -Werror -std=gnu11)

# build NAME LIBS...: compile NAME.c to OUTDIR/NAME unless it is up to date.
build() {
    local name="$1"; shift
    local src="$here/$name.c" bin="$out/$name"
    if [[ -x "$bin" && "$bin" -nt "$src" && "$bin" -nt "$here/peer.h" && "$bin" -nt "$here/pages.h" && "$bin" -nt "$here/build.sh" ]]; then
        echo "peers: $name up to date" >&2
        return 0
    fi
    echo "peers: cc $name" >&2
    cc "${cflags[@]}" -o "$bin.tmp" "$src" "$@"
    mv -f "$bin.tmp" "$bin"
}

have_sigsegv() {
    [[ -f /usr/include/sigsegv.h ]] ||
        echo '#include <sigsegv.h>' | cc -E -x c - >/dev/null 2>&1
}

ensure_sigsegv() {
    have_sigsegv && return 0
    echo "peers: sigsegv.h missing; installing libsigsegv-dev" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y libsigsegv-dev >&2; then
        echo "peers: install failed; running apt-get update and retrying" >&2
        apt-get update >&2 && apt-get install -y libsigsegv-dev >&2 || true
    fi
    have_sigsegv
}

build fault_raw
build fault_uffd -lpthread
build first_touch
build fork_peer
build mmap_floor
build memcpy_peer
build fork_server
build image_reset
build remap_floor

if ensure_sigsegv; then
    build fault_libsigsegv -lsigsegv
else
    echo "peers: libsigsegv unavailable; skipping fault_libsigsegv" >&2
    rm -f "$out/fault_libsigsegv"
fi
echo "peers: built into $out" >&2
