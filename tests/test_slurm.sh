#!/usr/bin/env bash
# test_slurm.sh -- deploy/slurm/ against a real Slurm cluster on 127.0.0.1.
#
#   tests/test_slurm.sh BUILD_DIR
#
# Brings up Debian's Slurm with ../shared/tools/slurm/start-slurm.sh (its
# own cluster folder under /tmp and free ports, so it disturbs no other
# cluster), starts nsed-sim, and submits the demo workflow (a fixed team: no
# broker learning, so every question's result is the same in any order) as
# a 4-shard array with deploy/slurm/submit.sh. It cancels one task while it
# runs, removes that task's local store (as if it were requeued on another
# node), resubmits the index (submit.sh --resubmit) with a new merge job,
# and checks:
#   - the cancelled task exited 130 and left a copy of its store with some
#     questions done and some not; the resubmitted task resumed from it;
#   - the merged store says every question is done, and its export is byte
#     for byte the export of a single-process `nsed run` of the same
#     workflow, questions and seed;
#   - the sharded path sent at most sum(max_concurrency) more requests than
#     the single run (the sim's own request counter): the cancel re-paid at
#     most the calls in flight;
#   - the same 4 shards submitted again with nothing cancelled, and run
#     directly (no Slurm, as many at once as the node has CPUs, as Slurm
#     runs them) and merged, give the same export and send as many requests
#     as the single run.
# It prints the wall times: of the path with the cancel, and of the
# uncancelled run on Slurm and directly (what Slurm's scheduling adds). Skips
# (exit 77) when not root, when the shared folder or the Slurm packages are
# absent (./setup.sh installs them). Everything it starts is stopped by PID
# and its folder /tmp/nsed-slurm-test-PID removed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
tools=$src/../shared/tools/slurm
nsed=$build/nsed
slurm=$src/deploy/slurm
wf=$src/workflows/demo.yaml
q=$src/workflows/demo-questions.jsonl
N=4
VICTIM=1
# the shards run with few questions in flight, so that a task runs for a few
# seconds and can be cancelled halfway (a fixed team's results do not depend
# on it)
ARGS="--max-active 2 --progress-interval 1"

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "not root (the Slurm daemons must run as root)"
[ -x "$tools/start-slurm.sh" ] || skip "no $tools/start-slurm.sh (the shared folder ../shared is absent)"
for c in slurmctld slurmd sbatch squeue scancel scontrol munged; do
    command -v "$c" >/dev/null ||
        skip "Slurm is not installed ($c missing; ./setup.sh installs slurmctld slurmd slurm-client munge)"
done
py=/usr/bin/python3
[ -x "$py" ] || py=python3

T=/tmp/nsed-slurm-test-$$ # under /tmp: munged needs a world-executable path
SIM_PID=
WATCHDOG=
fail=0
cleanup() {
    # the watchdog's sleep, then the watchdog
    [ -n "$WATCHDOG" ] && kill $(ps -o pid= --ppid "$WATCHDOG") "$WATCHDOG" 2>/dev/null
    [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
    if [ -d "$T/cluster" ]; then
        SLURM_BASE=$T/cluster SLURM_LINK_ETC=0 "$tools/stop-slurm.sh" --purge >"$T/stop.log" 2>&1 ||
            cat "$T/stop.log"
    fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'echo "FAIL: stopped by a signal or the 200 s watchdog"; exit 1' INT TERM
# ctest's TIMEOUT kills without a chance to clean up: stop well before it
(sleep 200 && kill -TERM $$) >/dev/null 2>&1 &
WATCHDOG=$!
rm -rf "$T"
mkdir -p "$T" && chmod 0755 "$T" || exit 1
cd "$T" || exit 1

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
check() { # check NAME COMMAND...
    local name=$1
    shift
    if "$@"; then echo "PASS: $name"; else echo "FAIL: $name"; fail=1; fi
}
die() { echo "FAIL: $*"; exit 1; }
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_gone JOBIDS [SECONDS]: until squeue lists none of them (every 0.2 s)
wait_gone() {
    local n=$((${2:-60} * 5))
    while [ $n -gt 0 ]; do
        [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
        sleep 0.2
        n=$((n - 1))
    done
    return 1
}
# task_state JOB INDEX, job_state JOB: from scontrol (no accounting here)
task_state() {
    scontrol -o show job "$1" | awk -v idx="$2" '{ s = ""; t = ""
        for (i = 1; i <= NF; i++) { if ($i ~ /^ArrayTaskId=/) t = substr($i, 13)
                                    if ($i ~ /^JobState=/) s = substr($i, 10) }
        if (t == idx) print s }'
}
job_state() { scontrol -o show job "$1" | grep -oE 'JobState=[A-Z_]+' | head -1 | cut -d= -f2; }
sim_requests() { curl -sf "http://127.0.0.1:$SIM_PORT/sim/stats" | "$py" -c 'import json, sys; print(json.load(sys.stdin)["totals"]["requests"])'; }
# done_of STORE: the number of questions done (status --json)
done_of() { "$nsed" status --store "$1" --json 2>/dev/null | "$py" -c 'import json, sys; print(json.load(sys.stdin)["questions"]["done"])' 2>/dev/null; }

# --- the cluster ------------------------------------------------------------
export SLURM_BASE=$T/cluster SLURM_LINK_ETC=0 SLURM_INSTALL=0
SLURMCTLD_PORT=$(free_port)
SLURMD_PORT=$(free_port)
while [ "$SLURMD_PORT" = "$SLURMCTLD_PORT" ]; do SLURMD_PORT=$(free_port); done
export SLURMCTLD_PORT SLURMD_PORT
t_start=$(now)
"$tools/start-slurm.sh" >"$T/start.log" 2>&1 || { cat "$T/start.log"; die "start-slurm.sh failed"; }
export SLURM_CONF=$SLURM_BASE/etc/slurm.conf
echo "cluster up in $(elapsed "$t_start" "$(now)") s (ports $SLURMCTLD_PORT/$SLURMD_PORT)"

# --- the simulator: the demo's models, slower (60 ms to the first token) ----
sed -e "s#^questions:.*#questions: $q#" -e 's/ttft_ms: 5,/ttft_ms: 60,/' \
    "$src/tests/sim/configs/demo-sim.yaml" >"$T/sim.yaml"
"$build/nsed-sim" --config "$T/sim.yaml" --port 0 >"$T/sim.out" 2>"$T/sim.err" &
SIM_PID=$!
for _ in $(seq 50); do grep -q '^listening on' "$T/sim.out" && break; sleep 0.1; done
SIM_PORT=$(sed -n 's/^listening on 127.0.0.1://p' "$T/sim.out")
[ -n "$SIM_PORT" ] || { cat "$T/sim.err"; die "nsed-sim did not start"; }
export NSED_SIM_URL=http://127.0.0.1:$SIM_PORT/v1
# sum of max_concurrency over the workflow's models, read from the file
slots=$(awk '/^ *max_concurrency:/ { s += $2 } END { print s }' "$wf")

# --- the Slurm path ---------------------------------------------------------
sub=(--workflow "$wf" --questions "$q" --shards $N --shared "$T/shared"
    --nsed "$nsed" --local "$T/local" --args "$ARGS" --parsable)
t0=$(now)
read -r J M < <("$slurm/submit.sh" "${sub[@]}") || die "submit.sh failed"
[ -n "${M:-}" ] || die "submit.sh printed no job ids"
echo "array job $J, merge job $M"
# wait until the victim's local store has finished a few questions, then
# cancel it while it runs
victim_done=0
for _ in $(seq 300); do
    st=$(ls -d "$T"/local/nsed-*-shard-$VICTIM-of-$N 2>/dev/null | head -1)
    if [ -n "$st" ] && [ -f "$st/data.mdb" ]; then
        victim_done=$(done_of "$st")
        [ "${victim_done:-0}" -ge 3 ] && break
    fi
    sleep 0.2
done
[ "${victim_done:-0}" -ge 3 ] || die "task $VICTIM made no progress in 60 s ($(task_state "$J" $VICTIM))"
check "task $VICTIM was running when cancelled" test "$(task_state "$J" $VICTIM)" = RUNNING
scancel "${J}_$VICTIM"
wait_gone "$J" 90 || die "array $J did not finish in 90 s"
t_array=$(now)
for k in $(seq 0 $((N - 1))); do
    if [ "$k" = $VICTIM ]; then want=CANCELLED; else want=COMPLETED; fi
    check "task $k $want" test "$(task_state "$J" "$k")" = $want
done
vlog=$T/shared/logs/shard-$VICTIM.$J.out
check "cancelled task: nsed exit 130, store copied" grep -q "nsed exit 130; store copied" "$vlog"
vdone=$(done_of "$T/shared/shard-$VICTIM")
check "cancelled task's copy: some of its questions done ($vdone)" test "${vdone:-0}" -ge 3
check "merge job $M cancelled (a task it waits for failed)" test "$(job_state "$M")" = CANCELLED
# as if the task were requeued on another node: no local store there
rm -rf "$T"/local/nsed-*-shard-$VICTIM-of-$N
read -r R M2 < <("$slurm/submit.sh" "${sub[@]}" --resubmit $VICTIM) || die "submit.sh --resubmit failed"
echo "resubmitted task $VICTIM as job $R, merge job $M2"
wait_gone "$R,$M2" 90 || die "jobs $R, $M2 did not finish in 90 s"
t1=$(now)
check "resubmitted task COMPLETED" test "$(task_state "$R" $VICTIM)" = COMPLETED
check "resubmitted task resumed from the shared copy" grep -q "resuming from the shared copy" "$T/shared/logs/shard-$VICTIM.$R.out"
check "merge job $M2 COMPLETED" test "$(job_state "$M2")" = COMPLETED
[ "$(job_state "$M2")" = COMPLETED ] || cat "$T"/shared/logs/merge.*.out
slurm_calls=$(sim_requests)

total=$(wc -l <"$q")
mdone=$(done_of "$T/shared/merged")
check "merged store: $total of $total questions done ($mdone)" test "${mdone:-0}" = "$total"
"$nsed" export --store "$T/shared/merged" >"$T/merged.jsonl" || echo "FAIL: export of the merged store"

# --- one process, no shards -------------------------------------------------
"$nsed" run "$wf" --questions "$q" --store "$T/single" -q || die "the single run failed"
"$nsed" export --store "$T/single" >"$T/single.jsonl"
single_calls=$(($(sim_requests) - slurm_calls))
check "merged export is byte-identical to the single run's ($(wc -l <"$T/single.jsonl") lines)" \
    cmp "$T/merged.jsonl" "$T/single.jsonl"
extra=$((slurm_calls - single_calls))
echo "requests: single run $single_calls, Slurm path $slurm_calls (re-paid $extra, at most $slots allowed)"
check "the cancel re-paid between 0 and $slots calls ($extra)" test "$extra" -ge 0 -a "$extra" -le "$slots"

# --- the same run on Slurm with nothing cancelled, and directly ------------
# what Slurm's scheduling adds: the array and the merge job, against the same
# shards run by hand as many at once as the node has CPUs (Slurm runs one
# task per CPU here), then the merge
before=$(sim_requests)
t2=$(now)
read -r J3 M3 < <("$slurm/submit.sh" --workflow "$wf" --questions "$q" --shards $N \
    --shared "$T/shared2" --nsed "$nsed" --local "$T/local2" --args "$ARGS" --max-running 2 \
    --parsable) || die "submit.sh failed"
check "submit.sh --max-running 2: the array's throttle is 2" \
    grep -q "ArrayTaskThrottle=2 " <(scontrol -o show job "$J3")
wait_gone "$J3,$M3" 90 || die "jobs $J3, $M3 did not finish in 90 s"
t3=$(now)
clean_calls=$(($(sim_requests) - before))
check "uncancelled array: merge job $M3 COMPLETED" test "$(job_state "$M3")" = COMPLETED
"$nsed" export --store "$T/shared2/merged" >"$T/merged2.jsonl"
check "uncancelled array: export byte-identical too" cmp "$T/merged2.jsonl" "$T/single.jsonl"
check "uncancelled array sent as many requests as the single run ($clean_calls)" \
    test "$clean_calls" = "$single_calls"

cpus=$(sinfo -h -o %c | head -1)
before=$(sim_requests)
t4=$(now)
drc=0
running=0
for k in $(seq 0 $((N - 1))); do
    if [ "$running" -ge "${cpus:-2}" ]; then
        wait -n || drc=1
        running=$((running - 1))
    fi
    # shellcheck disable=SC2086 # ARGS is split on purpose
    "$nsed" run "$wf" --questions "$q" --shard "$k/$N" --store "$T/direct/shard-$k" $ARGS -q \
        2>"$T/direct-$k.err" &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
    wait -n || drc=1
    running=$((running - 1))
done
[ "$drc" = 0 ] || { cat "$T"/direct-*.err; die "a direct shard failed"; }
"$nsed" merge "$T/direct/merged" "$T"/direct/shard-* >"$T/direct-merge.out" 2>&1 ||
    { cat "$T/direct-merge.out"; die "the direct merge failed"; }
t5=$(now)
direct_calls=$(($(sim_requests) - before))
"$nsed" export --store "$T/direct/merged" >"$T/direct.jsonl"
check "direct shards + merge: export byte-identical too" cmp "$T/direct.jsonl" "$T/single.jsonl"
check "direct shards sent as many requests as the single run ($direct_calls)" \
    test "$direct_calls" = "$single_calls"

echo "wall time: Slurm path with one task cancelled and resubmitted $(elapsed "$t0" "$t1") s" \
    "(array $(elapsed "$t0" "$t_array") s, resubmit + merge $(elapsed "$t_array" "$t1") s)"
echo "wall time: 4 shards + merge, uncancelled: Slurm $(elapsed "$t2" "$t3") s (submit to merged)," \
    "direct $(elapsed "$t4" "$t5") s (${cpus:-2} shards at once, then the merge)"
[ "$fail" = 0 ] || exit 1
echo "test_slurm: all checks passed"
