#!/usr/bin/env bash
# Build the UVm benchmark peers: bash benchmarks/peers/build.sh OUTDIR
# Compiles every peer with the system cc into OUTDIR, skipping binaries newer than
# their sources. fault_libsigsegv is optional: without libsigsegv (Debian's libsigsegv-dev)
# it is skipped, with one line on stderr saying how to install it, and the build still
# succeeds. This script installs nothing.
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

build fault_raw
build fault_uffd -lpthread
build first_touch
build fork_peer
build mmap_floor
build memcpy_peer
build fork_server
build image_reset
build remap_floor

if have_sigsegv; then
    build fault_libsigsegv -lsigsegv
else
    echo "peers: libsigsegv is not installed; fault_libsigsegv skipped (to measure it: apt-get install libsigsegv-dev)" >&2
    rm -f "$out/fault_libsigsegv"
fi
echo "peers: built into $out" >&2
