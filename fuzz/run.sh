#!/usr/bin/env bash
# run.sh -- run the libFuzzer harnesses of fuzz/ for a fixed time each
# (docs/fuzzing.md).
#
#   fuzz/run.sh [--time SECONDS] [--jobs N] [BUILD_DIR [HARNESS...]]
#
# BUILD_DIR (default build-fuzz) is a build configured with
# -DCMAKE_C_COMPILER=clang -DNSED_FUZZ=ON and built with --target fuzz.
# HARNESS is a name of the table below (default: all of them). Each one
# runs SECONDS (default 30) under AddressSanitizer+UBSan, at most N
# (default: the number of cores) at once, starting from its seed corpora;
# what it finds new goes to BUILD_DIR/fuzz/corpus/NAME (the seed folders
# are only read), its output to BUILD_DIR/fuzz/logs/NAME.log. A crash, a
# leak, a sanitizer report, a broken contract (FUZZ_CHECK), a timeout or
# running out of memory fails the harness: the report with its stack and the
# saved input (BUILD_DIR/fuzz/artifacts/NAME/...) are printed with the
# command that reproduces it.
# Exit status: 0 when every harness ran clean, 1 when one failed, 2 for a
# usage error or a harness that is not built.
set -uo pipefail
cd "$(dirname "$0")/.."

# name: seed folders (relative to the source tree), read recursively
declare -A SEEDS=(
    [workflow]="tests/data/workflows workflows"
    [questions]="tests/data/questions tests/data/sim workflows"
    [gateway]="fuzz/corpus/gateway"
    [evaluate]="fuzz/corpus/evaluate"
    [answer]="fuzz/corpus/answer"
    [state]="fuzz/corpus/state"
)
# name: libFuzzer options of its own. A question file is read line by
# line, so short files exercise the parser as well as the 18 KB demo set
# and run many times faster.
declare -A OPTIONS=(
    [questions]="-max_len=4096"
)
ORDER=(workflow questions gateway evaluate answer state)

seconds=30
jobs=$(nproc 2>/dev/null || echo 2)
build=""
names=()
while [ $# -gt 0 ]; do
    case "$1" in
    --time|--jobs)
        [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] ||
            { echo "run.sh: $1 needs a positive number" >&2; exit 2; }
        if [ "$1" = --time ]; then seconds=$2; else jobs=$2; fi
        shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    *)  if [ -z "$build" ]; then
            build=$1
        else
            [ -n "${SEEDS[$1]+x}" ] ||
                { echo "run.sh: no harness '$1' (${ORDER[*]})" >&2; exit 2; }
            names+=("$1")
        fi
        shift ;;
    esac
done
build=${build:-build-fuzz}
[ ${#names[@]} -gt 0 ] || names=("${ORDER[@]}")
for n in "${names[@]}"; do
    [ -x "$build/fuzz/fuzz_$n" ] || {
        echo "run.sh: $build/fuzz/fuzz_$n is not built (cmake --build $build --target fuzz)" >&2
        exit 2
    }
done

# run_one NAME: one harness, its output in its log.
run_one() {
    local n=$1 bin=$build/fuzz/fuzz_$1 art=$build/fuzz/artifacts/$1
    local work=$build/fuzz/corpus/$1 seeds=() opts=()
    local d
    for d in ${SEEDS[$n]}; do seeds+=("$d"); done
    for d in ${OPTIONS[$n]:-}; do opts+=("$d"); done
    # the reproducers of an earlier run were printed then; keep only new ones
    rm -rf "$art"
    mkdir -p "$art" "$work" "$build/fuzz/logs"
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$art/" ${opts[@]+"${opts[@]}"} \
        "$work" "${seeds[@]}" \
        >"$build/fuzz/logs/$n.log" 2>&1
    echo $? >"$build/fuzz/logs/$n.rc"
}

# report NAME RC: one line when clean, the evidence when not.
report() {
    local n=$1 rc=$2 log=$build/fuzz/logs/$1.log art=$build/fuzz/artifacts/$1
    local found runs cov
    found=$(find "$art" -type f | LC_ALL=C sort)
    if [ "$rc" -eq 0 ] && [ -z "$found" ] &&
        ! grep -qE 'ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:|contract broken' "$log"; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1)
        echo "ok   fuzz_$n: ${runs:-?} inputs in ${seconds} s, ${cov:-cov: ?}"
        return 0
    fi
    echo "FAIL fuzz_$n (exit $rc); from $log:"
    # the report and its stack, without libFuzzer's own frames
    sed -n '/ERROR: \|runtime error:\|contract broken:\|returned -[0-9]*, not 0:\|^==[0-9]*== *WARNING/,$p' "$log" |
        grep -v 'in fuzzer::\|libc_start\|in _start \|in main (' | head -n 30 | sed 's/^/    /'
    if [ -n "$found" ]; then
        while IFS= read -r f; do
            echo "    reproducer: $f"
            echo "    reproduce:  $build/fuzz/fuzz_$n $f"
        done <<<"$found"
    else
        echo "    no input was saved; rerun: fuzz/run.sh --time $seconds $build $n"
    fi
    return 1
}

echo "fuzz: ${names[*]}, ${seconds} s each, ${jobs} at a time"
failed=0
running=0
for n in "${names[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
    rm -f "$build/fuzz/logs/$n.rc"
    run_one "$n" &
    running=$((running + 1))
done
wait
for n in "${names[@]}"; do
    rc=$(cat "$build/fuzz/logs/$n.rc" 2>/dev/null || echo 1)
    report "$n" "$rc" || failed=$((failed + 1))
done
[ "$failed" -eq 0 ] || { echo "fuzz: $failed harness(es) failed" >&2; exit 1; }
echo "fuzz: all ${#names[@]} harnesses ran clean"
