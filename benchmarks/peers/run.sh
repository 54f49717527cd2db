#!/usr/bin/env bash
# Run the UVm benchmark peers: bash benchmarks/peers/run.sh OUTDIR [--quick]
# Prints every PEER line on stdout; diagnostics go to stderr. Exits non-zero if any
# peer fails, prints a malformed line, or a required binary is missing.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || ( $# -eq 2 && "$2" != "--quick" ) ]]; then
    echo "usage: $0 OUTDIR [--quick]" >&2
    exit 2
fi
out="$1"
args=()
limit=900
if [[ $# -eq 2 ]]; then args=(--quick); limit=60; fi

# fault_libsigsegv is optional (build.sh skips it when libsigsegv is not installed): when it
# was not built, its scenario gets an "unavailable" line naming the package it needs.
required=(fault_raw fault_uffd first_touch fork_peer mmap_floor memcpy_peer fork_server image_reset remap_floor)
optional=(fault_libsigsegv)
declare -A optional_scenario=([fault_libsigsegv]=fault_roundtrip_libsigsegv)
declare -A optional_package=([fault_libsigsegv]=libsigsegv-dev)

status=0
run_one() {
    local name="$1" bin="$out/$1" lines rc=0
    lines="$(timeout --kill-after=5 "$limit" "$bin" ${args[@]+"${args[@]}"})" || rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "peers: $name failed (exit $rc)" >&2
        status=1
    fi
    [[ -n "$lines" ]] && printf '%s\n' "$lines"
    if [[ -n "$lines" ]] && grep -Evq '^PEER [A-Za-z0-9_]+ [A-Za-z0-9_]+ [0-9.]+ reps=[0-9]+( [A-Za-z0-9_]+=[^ ]+)*$' <<<"$lines"; then
        echo "peers: $name printed a malformed line" >&2
        status=1
    elif [[ $rc -eq 0 && -z "$lines" ]]; then
        echo "peers: $name printed nothing" >&2
        status=1
    fi
}

for name in "${required[@]}"; do
    if [[ -x "$out/$name" ]]; then
        run_one "$name"
    else
        echo "peers: $out/$name missing (run build.sh first)" >&2
        status=1
    fi
done
for name in "${optional[@]}"; do
    if [[ -x "$out/$name" ]]; then
        run_one "$name"
    else
        echo "peers: $name not built (${optional_package[$name]} is not installed); skipped" >&2
        echo "PEER ${optional_scenario[$name]} unavailable 0 reps=0 not_installed=${optional_package[$name]}"
    fi
done
exit "$status"
