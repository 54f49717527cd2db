#!/usr/bin/env bash
# build.sh OUTDIR - builds OUTDIR/libuvm.so from this folder with the system cc.
# The library is stripped (what the NuGet package ships); its debug information goes to
# OUTDIR/libuvm.so.debug beside it, which the library names (.gnu_debuglink) and matches by
# build ID, so gdb finds it there. The build is reproducible: source paths are recorded as
# src/Native, wherever the repository is, so the same sources give the same bytes.
# Idempotent: always rebuilds (well under a second) and replaces both files atomically, so a
# process that has the old library loaded is not disturbed.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)

tmp=$(mktemp -d "$out/.libuvm.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# Objects are compiled one by one under fixed names in $tmp: a one-step compile-and-link would
# put the assembler's temporary object name into the symbol table.
cd "$tmp"
cflags=(-O2 -g -fPIC -Wall -Wextra -Werror -fvisibility=hidden -ffile-prefix-map="$here"=src/Native -ffile-prefix-map="$tmp"=src/Native)
${CC:-cc} "${cflags[@]}" -c "$here/uvm_signal.c" -o uvm_signal.o
${CC:-cc} "${cflags[@]}" -c "$here/uvm_copy.S" -o uvm_copy.o
${CC:-cc} -shared -Wl,-soname,libuvm.so -Wl,--build-id=sha1 -Wl,-z,defs -Wl,-z,noexecstack -Wl,-z,relro -Wl,-z,now \
    -o libuvm.so uvm_signal.o uvm_copy.o
# The debug file keeps the name the link records (libuvm.so.debug), so both are made in $tmp.
objcopy --only-keep-debug libuvm.so libuvm.so.debug
chmod 0644 libuvm.so.debug
strip --strip-unneeded libuvm.so
objcopy --add-gnu-debuglink=libuvm.so.debug libuvm.so
chmod 0755 libuvm.so
mv -f "$tmp/libuvm.so.debug" "$out/libuvm.so.debug"
mv -f "$tmp/libuvm.so" "$out/libuvm.so"
