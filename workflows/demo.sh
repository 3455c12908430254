#!/usr/bin/env bash
# demo.sh -- the demo: three simulated models deliberate over 120 questions.
#
# Starts nsed-sim (the simulated OpenAI-compatible server) on a free port of
# 127.0.0.1, runs workflows/demo.yaml over workflows/demo-questions.jsonl
# into a fresh run store, prints the status (NSED's accuracy next to each
# model alone and the majority vote of their first answers), and stops the
# server. Run by `./setup.sh --demo` after the build. The store goes to
# $NSED_DEMO_STORE (default ./demo-store, replaced on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
NSED=./build/nsed
SIM=./build/nsed-sim
STORE=${NSED_DEMO_STORE:-demo-store}

out=$(mktemp)
sim_pid=
cleanup() {
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
    rm -f "$out"
}
trap cleanup EXIT

echo "== nsed validate"
$NSED validate --quiet workflows/demo.yaml workflows/demo-questions.jsonl

echo
echo "== nsed-sim (simulated models on 127.0.0.1)"
$SIM --config tests/sim/configs/demo-sim.yaml --port 0 >"$out" 2>/dev/null &
sim_pid=$!
for _ in $(seq 100); do
    grep -q '^listening on' "$out" && break
    sleep 0.05
done
port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$out")
[ -n "$port" ] || { echo "demo.sh: nsed-sim did not start" >&2; exit 1; }
echo "listening on 127.0.0.1:$port"
export NSED_SIM_URL="http://127.0.0.1:$port/v1"

echo
echo "== nsed run"
rm -rf "$STORE"
$NSED run workflows/demo.yaml --questions workflows/demo-questions.jsonl \
    --store "$STORE"

echo
echo "== nsed status"
$NSED status --store "$STORE"

echo
echo "== first result (nsed export --store $STORE)"
$NSED export --store "$STORE" | head -n 1 | cut -c 1-300
echo "..."
