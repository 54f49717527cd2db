#!/usr/bin/env bash
# UVm's one entry point.
#   ./build.sh              build everything (native library, library, tests, examples, benchmarks) and run the demo
#   ./build.sh test         build everything and run every suite; the last line is "N passed, N failed, N skipped"
#   ./build.sh bench [--quick]   run the benchmarks (UVm beside its peers) and print the tables
# Each step says what it does when it starts and how long it took when it ends.
set -euo pipefail
cd "$(dirname "$0")"
root=$PWD
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
native_out="$root/artifacts/native"
config=Release

need() { command -v "$1" >/dev/null 2>&1 || { echo "build.sh: '$1' is required but not installed" >&2; exit 1; }; }

# step NAME "what it does": says a step starts; done_step: says how long it took.
step_name="" step_start=0
step() { step_name=$1 step_start=$SECONDS; echo "== $1: $2"; }
done_step() { echo "== $step_name done in $((SECONDS - step_start)) s"; }

build_all() {
    need dotnet
    need cc
    step native "src/Native -> artifacts/native/libuvm.so (stripped; debug information in libuvm.so.debug)"
    bash src/Native/build.sh "$native_out"
    done_step
    step build "restore and build UVm.sln ($config): library, tests, examples, benchmarks"
    dotnet build UVm.sln -c "$config" -nologo -v minimal -clp:NoSummary
    done_step
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

    step format "code style, dotnet format --verify-no-changes (to fix: dotnet format UVm.sln)"
    if dotnet format UVm.sln --verify-no-changes --no-restore >"$logs/format.log" 2>&1; then
        echo "format: 1 passed, 0 failed, 0 skipped" | tee -a "$logs/format.log"
    else
        grep -E 'error|warn' "$logs/format.log" | head -40 || tail -40 "$logs/format.log"
        echo "format: 0 passed, 1 failed, 0 skipped" | tee -a "$logs/format.log"
    fi
    count_plain "$logs/format.log"
    done_step

    step native-tests "the native fault bridge's own tests (C)"
    bash tests/Native/run.sh "$native_out" --no-bench 2>&1 | tee "$logs/native.log" || true
    count_plain "$logs/native.log"
    done_step

    step UVm.Tests "NUnit, one line per fixture as it ends"
    # A hung test fails the run instead of stalling it: once one test has run for $hang_timeout,
    # the blame collector dumps the test host's threads (a mini dump under artifacts/test-results/,
    # read with dotnet-dump analyze), ends the host and names the test. The timeout is per test;
    # the whole suite takes a few minutes, so no test comes near it.
    # Progress: the tests append a line per fixture to $progress (TestSupport/FixtureProgress.cs),
    # which tail shows while dotnet test runs.
    local hang_timeout=15min rc=0 failed_before progress="$logs/progress.txt" tail_pid
    rm -rf "$root/artifacts/test-results"
    : >"$progress"
    tail -n +1 -f --pid=$$ "$progress" &
    tail_pid=$!
    UVM_TEST_PROGRESS="$progress" dotnet test tests/UVm.Tests/UVm.Tests.csproj -c "$config" --no-build -nologo \
        --blame-hang --blame-hang-timeout "$hang_timeout" --blame-hang-dump-type mini \
        --results-directory "$root/artifacts/test-results" 2>&1 | tee "$logs/dotnet.log" || rc=$?
    sleep 1
    kill "$tail_pid" 2>/dev/null || true
    wait "$tail_pid" 2>/dev/null || true
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
    done_step

    if [[ -f benchmarks/peers/run.sh ]]; then
        step bench-smoke "quick peers, then UVm's scenarios at tiny sizes (correctness only, no timing judged)"
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
        done_step
    fi

    echo "$passed passed, $failed failed, $skipped skipped"
    [[ $failed -eq 0 ]]
}

case "${1:-}" in
    "")
        build_all
        step demo "examples/CowFork: a copy-on-write fork, its faults and the space dump"
        dotnet run --project examples/CowFork/CowFork.csproj -c "$config" --no-build
        done_step
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
        step native-bench "the native primitives, uvm_copy beside memcpy (C)"
        bash tests/Native/run.sh "$native_out" --bench-only
        done_step
        step peers "build and run the C peers (${peer_mode[*]:-full})"
        bash benchmarks/peers/build.sh "$peers_out"
        if [[ ! -x "$peers_out/fault_libsigsegv" ]]; then
            echo "build.sh: the libsigsegv peer is skipped: libsigsegv is not installed. To measure it, install it (as root: apt-get install libsigsegv-dev) and run ./build.sh bench again."
        fi
        if ! bash benchmarks/peers/run.sh "$peers_out" ${peer_mode[@]+"${peer_mode[@]}"} | tee "$peer_lines"; then
            echo "build.sh: some peers failed; their rows show no peer figure" >&2
        fi
        done_step
        step scenarios "UVm's scenarios beside the peers' figures"
        dotnet run --project benchmarks/UVm.Benchmarks/UVm.Benchmarks.csproj -c "$config" --no-build -- \
            --peers "$peer_lines" --results "$root/benchmarks/results" "$@"
        done_step
        ;;
    *)
        echo "usage: ./build.sh [test | bench [--quick]]" >&2
        exit 2
        ;;
esac
