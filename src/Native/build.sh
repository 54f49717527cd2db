#!/usr/bin/env bash
# build.sh OUTDIR - builds OUTDIR/libuvm.so from this folder with the system cc.
# Idempotent: always rebuilds (well under a second) and replaces the library
# atomically, so a process that has the old one loaded is not disturbed.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$1
mkdir -p "$out"

tmp=$(mktemp "$out/.libuvm.so.XXXXXX")
trap 'rm -f "$tmp"' EXIT
${CC:-cc} -O2 -fPIC -shared -Wall -Wextra -Werror -fvisibility=hidden \
    -Wl,-soname,libuvm.so -Wl,-z,defs -Wl,-z,noexecstack -Wl,-z,relro -Wl,-z,now \
    -o "$tmp" "$here/uvm_signal.c" "$here/uvm_copy.S"
chmod 0755 "$tmp"
mv -f "$tmp" "$out/libuvm.so"
trap - EXIT
