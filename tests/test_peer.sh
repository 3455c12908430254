#!/usr/bin/env bash
# test_peer.sh -- bench/peer/nsed_peer.py, the benchmark's figure-9 peer,
# runs nsed's protocol.
#
#   tests/test_peer.sh BUILD_DIR
#
# Serves bench/team3.yaml's three models from nsed-sim with judgements
# that make the protocol's outcome computable by hand: alpha and beta
# always answer right (p_gen 1), gamma always wrong (p_gen 0), and every
# judgement is right (p_ver 1). So in round 0 the two right candidates get
# weights in [40, 100] from every evaluator that sees them and the wrong
# one weights in [-100, -30]: quadratic voting must pick a right one, and
# its conviction is at most 0.85*2 / (3 * 0.53*2) < 0.6, so
# consensus_margin cannot stop round 0; in round 1 gamma verifies the
# winner and adopts it, the winner's answer is the same again, and
# stable_answer (2) stops. Every question: correct, 2 rounds, stop reason
# stable_answer, 2 x (3 proposals + 3 evaluations) = 12 calls, 4 per
# model. The test checks the peer's results and the simulator's own counts
# per model and per kind of request (round-0 proposals, revisions,
# evaluations, from its request log) against those numbers, and that
# nsed on the same questions and simulator ends with the same final
# answers and rounds. Skips (77) with one line when /usr/bin/python3 lacks
# aiohttp or yaml (./setup.sh installs python3-aiohttp, python3-yaml).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
py=${NSED_PEER_PYTHON:-/usr/bin/python3}
N=10
if ! "$py" -c 'import aiohttp, yaml' 2>/dev/null; then
    echo "test_peer: SKIP: $py has no aiohttp/yaml (apt-get install python3-aiohttp python3-yaml)"
    exit 77
fi
dir=/tmp/nsed-peer-test-$$
sim_pid=
cleanup() {
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "test_peer: FAIL: $*"; exit 1; }
mkdir -p "$dir"

"$py" - "$dir/q.jsonl" "$N" <<'EOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        a, b = 100 + 37 * i, 11 + 5 * i
        f.write(json.dumps({"id": "p%03d" % i, "question":
                            "What is %d + %d?" % (a, b), "answer": a + b}) + "\n")
EOF
cat > "$dir/sim.yaml" <<'EOF'
kind: nsed-sim
seed: 5
models:
  - {name: bench-alpha, family: alpha, p_gen: 1.0, p_ver: 1.0}
  - {name: bench-beta, family: beta, p_gen: 1.0, p_ver: 1.0}
  - {name: bench-gamma, family: gamma, p_gen: 0.0, p_ver: 1.0}
EOF
NSED_SIM_REQUEST_LOG=$dir/requests.log "$build/nsed-sim" --config "$dir/sim.yaml" \
    --questions "$dir/q.jsonl" > "$dir/sim.out" 2> "$dir/sim.err" &
sim_pid=$!
for _ in $(seq 100); do grep -q listening "$dir/sim.out" && break; sleep 0.1; done
port=$(sed -n 's/^listening on 127.0.0.1://p' "$dir/sim.out")
[ -n "$port" ] || fail "nsed-sim printed no port"
export NSED_SIM_URL=http://127.0.0.1:$port/v1

line=$("$py" "$src/bench/peer/nsed_peer.py" --workflow "$src/bench/team3.yaml" \
       --questions "$dir/q.jsonl" --out "$dir/peer.jsonl") || fail "the peer exited $?"
echo "test_peer: peer: $line"
curl -sf "http://127.0.0.1:$port/sim/stats" > "$dir/stats.json" || fail "no /sim/stats"

"$py" - "$dir" "$N" "$line" <<'EOF' || exit 1
import json, sys
d, n, line = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def fail(msg):
    print("test_peer: FAIL: " + msg)
    sys.exit(1)
kv = dict(x.split("=") for x in line.split())
want = {"questions": n, "correct": n, "calls": 12 * n, "rounds": 2 * n,
        "failed": 0}
for k, v in want.items():
    if int(kv[k]) != v:
        fail("%s=%s, expected %d" % (k, kv[k], v))
qs = {json.loads(l)["id"]: json.loads(l) for l in open(d + "/q.jsonl")}
rs = [json.loads(l) for l in open(d + "/peer.jsonl")]
if sorted(r["id"] for r in rs) != sorted(qs):
    fail("results are not one per question")
for r in rs:
    if r["final_answer"] != str(qs[r["id"]]["answer"]) or not r["correct"]:
        fail("%s: final answer %r, reference %r" % (r["id"], r["final_answer"],
                                                     qs[r["id"]]["answer"]))
    if r["rounds"] != 2 or r["stop_reason"] != "stable_answer":
        fail("%s: %d rounds, %s" % (r["id"], r["rounds"], r["stop_reason"]))
st = json.load(open(d + "/stats.json"))
for m in ("bench-alpha", "bench-beta", "bench-gamma"):
    got = st["models"][m]["requests"]
    if got != 4 * n:
        fail("the simulator counted %d requests to %s, expected %d" % (got, m, 4 * n))
kinds = {"propose0": 0, "revise": 0, "evaluate": 0}
for l in open(d + "/requests.log"):
    req = json.loads(l)
    user = req["messages"][-1]["content"]
    if "=====BEGIN CANDIDATE" in user:
        kinds["evaluate"] += 1
        if "response_format" not in req:
            fail("an evaluation without its schema")
    elif "=====BEGIN WINNING SOLUTION" in user:
        kinds["revise"] += 1
    else:
        kinds["propose0"] += 1
if kinds != {"propose0": 3 * n, "revise": 3 * n, "evaluate": 6 * n}:
    fail("requests by kind %r, expected %d/%d/%d" % (kinds, 3 * n, 3 * n, 6 * n))
EOF

# nsed on the same questions and simulator: the same answers and rounds.
"$build/nsed" run "$src/bench/team3.yaml" --questions "$dir/q.jsonl" \
    --store "$dir/store" > "$dir/nsed.out" 2>&1 || fail "nsed run failed: $(tail -1 "$dir/nsed.out")"
"$build/nsed" export --store "$dir/store" > "$dir/export.jsonl" || fail "nsed export failed"
"$py" - "$dir" <<'EOF' || exit 1
import json, sys
d = sys.argv[1]
peer = {r["id"]: r for r in map(json.loads, open(d + "/peer.jsonl"))}
for e in map(json.loads, open(d + "/export.jsonl")):
    p = peer[e["id"]]
    if (e["final_answer"], e["rounds"], e["stop_reason"]) != \
            (p["final_answer"], p["rounds"], p["stop_reason"]):
        print("test_peer: FAIL: %s: nsed %r %r %r, peer %r %r %r" % (
            e["id"], e["final_answer"], e["rounds"], e["stop_reason"],
            p["final_answer"], p["rounds"], p["stop_reason"]))
        sys.exit(1)
EOF
echo "test_peer: ok ($N questions, 12 calls each, as nsed)"
