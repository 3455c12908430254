#!/usr/bin/env bash
# run.sh -- build and run the benchmark (docs/performance.md).
#
#   ./bench/run.sh            the full table (a few minutes on 2 cores)
#   ./bench/run.sh --quick    smaller sets, about 40 s (noisier)
#   ./bench/run.sh --only 7,8 opt-in: wall time through a 60 s outage and
#                             through 20% always-failing prompts
#   ./bench/run.sh --only 9   nsed against bench/peer/nsed_peer.py (in the
#                             default set; needs python3-aiohttp, or
#                             --no-peer)
#   ./bench/run.sh --only 3 --long
#                             heap and store growth up to 1M questions
#   ./bench/run.sh --help     every option of nsed-bench
#
# Builds build/ (or $NSED_BUILD) in release mode (RelWithDebInfo, the
# project's default) with the nsed-bench and nsed-sim targets only, then runs
# build/bench/nsed-bench with the arguments given. Its stores and question
# sets go to a temporary directory that is removed afterwards (--keep keeps
# it).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${NSED_BUILD:-build}
cmake -S . -B "$BUILD" >/dev/null
cmake --build "$BUILD" --target nsed-bench nsed-sim -j"$(nproc)" >/dev/null
exec "$BUILD/bench/nsed-bench" "$@"
