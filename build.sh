#!/usr/bin/env bash
# UVm's one entry point.
#   ./build.sh              build everything (native library, library, tests, examples, benchmarks) and run the demo
#   ./build.sh test         build everything and run every suite; the last line is "N passed, N failed, N skipped"
#   ./build.sh bench [--quick]   run the benchmarks (UVm beside its peers) and print the tables
set -euo pipefail
cd "$(dirname "$0")"
root=$PWD
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
native_out="$root/artifacts/native"
config=Release

need() { command -v "$1" >/dev/null 2>&1 || { echo "build.sh: '$1' is required but not installed" >&2; exit 1; }; }

build_all() {
    need dotnet
    need cc
    bash src/Native/build.sh "$native_out"
    dotnet build UVm.sln -c "$config" -nologo -v quiet
}

# Sums "Failed: a, Passed: b, Skipped: c" summaries of dotnet test and "x: N passed, N failed, N skipped" lines of other suites.
passed=0 failed=0 skipped=0
count_dotnet() {
    local log=$1 line p f s
    while IFS= read -r line; do
        f=$(sed -E 's/.*Failed: *([0-9]+).*/\1/' <<<"$line")
        p=$(sed -E 's/.*Passed: *([0-9]+).*/\1/' <<<"$line")
        s=$(sed -E 's/.*Skipped: *([0-9]+).*/\1/' <<<"$line")
        passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
    done < <(grep -E '(Passed|Failed)! +- +Failed: *[0-9]+, Passed: *[0-9]+, Skipped: *[0-9]+' "$log" || true)
}
count_plain() {
    local log=$1 line
    line=$(grep -E '^[a-z-]+: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$log" | tail -n 1 || true)
    if [[ -z $line ]]; then
        echo "build.sh: $log printed no summary line; counting the suite as one failure" >&2
        failed=$((failed + 1)); return
    fi
    read -r p f s < <(sed -E 's/^[a-z-]+: ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped$/\1 \2 \3/' <<<"$line")
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
}

run_tests() {
    local logs="$root/artifacts/test-logs"
    mkdir -p "$logs"
    rm -f "$logs"/*.log

    echo "== native fault bridge (C)"
    bash tests/Native/run.sh "$native_out" 2>&1 | tee "$logs/native.log" || true
    count_plain "$logs/native.log"

    echo "== UVm.Tests (NUnit)"
    # A hung test fails the run instead of stalling it: once one test has run for $hang_timeout,
    # the blame collector dumps the test host's threads (a mini dump under artifacts/test-results/,
    # read with dotnet-dump analyze), ends the host and names the test. The timeout is per test;
    # the whole suite takes a few minutes, so no test comes near it.
    local hang_timeout=15min rc=0 failed_before
    rm -rf "$root/artifacts/test-results"
    dotnet test tests/UVm.Tests/UVm.Tests.csproj -c "$config" --no-build -nologo \
        --blame-hang --blame-hang-timeout "$hang_timeout" --blame-hang-dump-type mini \
        --results-directory "$root/artifacts/test-results" 2>&1 | tee "$logs/dotnet.log" || rc=$?
    failed_before=$failed
    if ! grep -qE '(Passed|Failed)! +- +Failed:' "$logs/dotnet.log"; then
        echo "build.sh: the NUnit run printed no summary; counting it as one failure" >&2
        failed=$((failed + 1))
    fi
    count_dotnet "$logs/dotnet.log"
    # An aborted run (a hang ended by the blame collector, a crashed test host) may still print a
    # summary with no failure in it, counting only the tests that ended: its exit code tells.
    if [[ $rc -ne 0 && $failed -eq $failed_before ]]; then
        echo "build.sh: dotnet test exited $rc with no failed test counted (run aborted: hang or crash); counting it as one failure" >&2
        grep -E 'Test Run Aborted|inactivity time|test running when the crash occurred|hangdump' -A1 "$logs/dotnet.log" >&2 || true
        failed=$((failed + 1))
    fi

    if [[ -f benchmarks/peers/run.sh ]]; then
        echo "== benchmark harness smoke (quick peers, then UVm's scenarios at tiny sizes; correctness only, no timing judged)"
        local peer_lines="$root/artifacts/peers-quick.txt"
        if bash benchmarks/peers/build.sh "$root/artifacts/peers" >"$logs/peers.log" 2>&1 \
            && bash benchmarks/peers/run.sh "$root/artifacts/peers" --quick >"$peer_lines" 2>>"$logs/peers.log"; then
            n=$(grep -c '^PEER ' "$peer_lines" || true)
            echo "peers: $n figures"; passed=$((passed + 1))
        else
            echo "peers smoke failed:"; tail -20 "$logs/peers.log"; failed=$((failed + 1))
        fi
        dotnet run --project benchmarks/UVm.Benchmarks/UVm.Benchmarks.csproj -c "$config" --no-build -- \
            --smoke --peers "$peer_lines" 2>&1 | tee "$logs/bench-smoke.log" || true
        count_plain "$logs/bench-smoke.log"
    fi

    echo "$passed passed, $failed failed, $skipped skipped"
    [[ $failed -eq 0 ]]
}

case "${1:-}" in
    "")
        build_all
        dotnet run --project examples/CowFork/CowFork.csproj -c "$config" --no-build
        ;;
    test)
        build_all
        run_tests
        ;;
    bench)
        # Peers (C) first, then UVm's scenarios, in one run; UVm.Benchmarks prints the one table
        # and writes benchmarks/results/latest.{md,json}. Extra arguments go to UVm.Benchmarks.
        shift
        build_all
        peers_out="$root/artifacts/peers" peer_lines="$root/artifacts/peers.txt" peer_mode=()
        for a in "$@"; do
            if [[ $a == --quick ]]; then peer_mode=(--quick); fi
        done
        echo "== peers (C): build and run ${peer_mode[*]:-full}"
        bash benchmarks/peers/build.sh "$peers_out"
        if ! bash benchmarks/peers/run.sh "$peers_out" ${peer_mode[@]+"${peer_mode[@]}"} | tee "$peer_lines"; then
            echo "build.sh: some peers failed; their rows show no peer figure" >&2
        fi
        echo "== UVm scenarios"
        dotnet run --project benchmarks/UVm.Benchmarks/UVm.Benchmarks.csproj -c "$config" --no-build -- \
            --peers "$peer_lines" --results "$root/benchmarks/results" "$@"
        ;;
    *)
        echo "usage: ./build.sh [test | bench [--quick]]" >&2
        exit 2
        ;;
esac
