#!/usr/bin/env bash
# setup.sh -- install nsed's Debian dependencies, build, and run the demo or
# the test suite.
#
#   ./setup.sh            install, build, run the demo (same as --demo)
#   ./setup.sh --demo     install, build, run the demo workflow on nsed-sim
#   ./setup.sh --test     install, build (normal and ASan+UBSan), run the
#                         checks (tools/check-layers, check-style,
#                         check-links) and all tests, then build the fuzz
#                         harnesses with clang (build-fuzz) and run each
#                         for $NSED_FUZZ_SECONDS (default 30) seconds
#   ./setup.sh --build    install and build only
#
# Idempotent: packages already installed are not reinstalled, builds are
# incremental. Runs apt-get as root, or through sudo when not root.
set -euo pipefail
cd "$(dirname "$0")"

# chromium renders `nsed report` in tests/test_report.c and python3-pandas
# loads the exports in tests/test_exports.c (each skipped without).
# python3-aiohttp and python3-yaml run bench/peer/nsed_peer.py, the peer
# of the benchmark's figure 9 and of tests/test_peer.sh.
# clang and libclang-rt-dev (libFuzzer, the sanitizer runtimes) build the
# fuzz harnesses of fuzz/ (docs/fuzzing.md). slurmctld, slurmd,
# slurm-client and munge are the single-host Slurm cluster tests/test_slurm.sh
# starts (docs/cluster.md); installed here, so that no test runs apt-get.
PACKAGES=(build-essential cmake pkg-config libyaml-dev libcurl4-openssl-dev
          libcjson-dev liblmdb-dev libzstd-dev libssl-dev check libmicrohttpd-dev
          clang-format git clang libclang-rt-dev libgsl-dev libpcre2-dev
          chromium python3-pandas python3-aiohttp python3-yaml slurmctld
          slurmd slurm-client munge)

mode=${1:---demo}
case "$mode" in
--demo|--test|--build) ;;
-h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
*) echo "setup.sh: unknown option '$mode' (try --help)" >&2; exit 2 ;;
esac

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || {
            echo "setup.sh: need root or sudo to install: ${missing[*]}" >&2
            exit 1
        }
        sudo="sudo"
    fi
    echo "setup.sh: installing ${missing[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
}

JOBS=$(nproc 2>/dev/null || echo 2)

build() { # build DIR [cmake options...]
    local dir=$1
    shift
    cmake -S . -B "$dir" -DNSED_WERROR=ON "$@" >/dev/null
    cmake --build "$dir" -j "$JOBS" 2>&1 | grep -Ev '^\[|^gmake|^make|Consolidate compiler' || true
    cmake --build "$dir" -j "$JOBS" >/dev/null
}

# The fuzz harnesses only: clang with libFuzzer, in a build directory of
# their own so that the gcc builds are untouched.
build_fuzz() {
    cmake -S . -B build-fuzz -DNSED_WERROR=ON -DCMAKE_C_COMPILER=clang \
        -DNSED_FUZZ=ON >/dev/null
    cmake --build build-fuzz --target fuzz -j "$JOBS" 2>&1 |
        grep -Ev '^\[|^gmake|^make|Consolidate compiler' || true
    cmake --build build-fuzz --target fuzz -j "$JOBS" >/dev/null
}

install_packages
build build -DCMAKE_BUILD_TYPE=RelWithDebInfo

case "$mode" in
--build)
    echo "setup.sh: built build/nsed"
    ;;
--demo)
    exec ./workflows/demo.sh
    ;;
--test)
    # The checks run first and all of them; a failing one does not stop
    # the tests, but fails the whole command at the end.
    failed_checks=()
    echo "== checks"
    tools/check-layers build || failed_checks+=(check-layers)
    tools/check-style || failed_checks+=(check-style)
    tools/check-links || failed_checks+=(check-links)
    echo "== tests (RelWithDebInfo)"
    (cd build && ctest --output-on-failure -j "$JOBS")
    echo "== tests (ASan+UBSan)"
    build build-asan -DCMAKE_BUILD_TYPE=Debug -DNSED_SANITIZE=ON
    (cd build-asan &&
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --output-on-failure -j "$JOBS")
    # A crash, leak or sanitizer report fails the command at the end, with
    # the path of the input that caused it (fuzz/run.sh).
    echo "== fuzzing (libFuzzer, ${NSED_FUZZ_SECONDS:-30} s per harness)"
    build_fuzz
    fuzz/run.sh --time "${NSED_FUZZ_SECONDS:-30}" --jobs "$JOBS" build-fuzz ||
        failed_checks+=(fuzzing)
    if [ ${#failed_checks[@]} -gt 0 ]; then
        echo "setup.sh: the tests passed, but these checks failed: ${failed_checks[*]}" >&2
        exit 1
    fi
    echo "setup.sh: checks and tests passed"
    ;;
esac
