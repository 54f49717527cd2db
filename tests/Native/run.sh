#!/usr/bin/env bash
# run.sh OUTDIR - builds tests/Native/test_native.c against OUTDIR/libuvm.so
# (built by src/Native/build.sh OUTDIR) and runs it. Extra arguments go to the
# test binary: --no-bench runs the cases without the throughput table (./build.sh test),
# --bench-only prints the table alone (./build.sh bench). Exit status: the test's (non-zero iff
# a case failed).
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 OUTDIR [--no-bench | --bench-only]" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
native=$(cd "$here/../../src/Native" && pwd)
out=$(cd "$1" && pwd)
shift

if [[ ! -f "$out/libuvm.so" ]]; then
    echo "run.sh: $out/libuvm.so not found; run src/Native/build.sh $out first" >&2
    exit 2
fi

tmp=$(mktemp "$out/.test_native.XXXXXX")
trap 'rm -f "$tmp"' EXIT
${CC:-cc} -O2 -g -fPIE -pie -Wall -Wextra -Werror -I"$native" \
    -o "$tmp" "$here/test_native.c" -L"$out" -luvm -Wl,-rpath,"$out" -pthread
chmod 0755 "$tmp"
mv -f "$tmp" "$out/test_native"
trap - EXIT

exec "$out/test_native" "$@"
