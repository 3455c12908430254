#!/usr/bin/env bash
# test_deploy.sh -- deploy/ without a scheduler.
#
#   tests/test_deploy.sh BUILD_DIR
#
# 1. The Kubernetes manifests of deploy/k8s parse as YAML (Debian's python3
#    yaml module) and hang together: an Indexed Job whose completions,
#    parallelism and NSED_SHARDS agree, restartPolicy Never (which
#    backoffLimitPerIndex needs), the local store on an emptyDir mounted at
#    NSED_LOCAL_DIR, the copies on the PVC of pvc.yaml (ReadWriteMany), the
#    scripts they run present in deploy/slurm, and the merge Job reading the
#    same shared folder. (`kubectl apply --dry-run=client` needs an API
#    server even with --validate=false, so it is not run.)
# 2. The scripts refuse an incomplete configuration (exit 2), and submit.sh
#    an index outside the shards.
# 3. The Kubernetes path, run by hand: deploy/slurm/nsed-shard.sbatch once
#    per JOB_COMPLETION_INDEX against nsed-sim, shard 2 stopped by a SIGTERM
#    sent to the script alone (as Kubernetes signals a container's PID 1, or
#    Slurm with --signal=B:TERM): it must pass the signal on, exit 130 and
#    leave a whole copy; run again with its local folder gone, it resumes from
#    that copy. Then nsed-merge.sbatch, whose merged export must equal a
#    single `nsed run`'s byte for byte.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
nsed=$build/nsed
py=/usr/bin/python3
[ -x "$py" ] || py=python3
"$py" -c 'import yaml' 2>/dev/null || { echo "SKIP: python3 has no yaml module (python3-yaml)"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/nsed-deploy-XXXXXX")
SIM_PID=
cleanup() {
    [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
fail=0
check() { # check NAME COMMAND...
    local name=$1
    shift
    if "$@"; then echo "PASS: $name"; else echo "FAIL: $name"; fail=1; fi
}
die() { echo "FAIL: $*"; exit 1; }

# --- 1. the manifests -------------------------------------------------------
check "deploy/k8s manifests parse and agree" "$py" - "$src" <<'PY'
import os, sys, yaml
src = sys.argv[1]
k8s = os.path.join(src, "deploy", "k8s")
def load(name):
    with open(os.path.join(k8s, name)) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    assert len(docs) == 1, f"{name}: {len(docs)} documents"
    return docs[0]
def env(c):
    return {e["name"]: e.get("value") for e in c.get("env", [])}
def check_pod(name, job, claim):
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never", f"{name}: restartPolicy"
    (c,) = pod["containers"]
    e = env(c)
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    local = e["NSED_LOCAL_DIR"]
    assert "emptyDir" in vols[mounts[local]], f"{name}: NSED_LOCAL_DIR {local} is not an emptyDir"
    shared = [p for p in mounts if "persistentVolumeClaim" in vols[mounts[p]]]
    assert len(shared) == 1, f"{name}: one PVC mount"
    assert vols[mounts[shared[0]]]["persistentVolumeClaim"]["claimName"] == claim, f"{name}: claim"
    assert e["NSED_SHARED_DIR"].startswith(shared[0] + "/"), f"{name}: NSED_SHARED_DIR off the PVC"
    script = os.path.basename(c["command"][-1])
    assert os.path.exists(os.path.join(src, "deploy", "slurm", script)), f"{name}: no {script}"
    scripts = [p for p in mounts if "configMap" in vols[mounts[p]]]
    assert scripts and c["command"][-1].startswith(scripts[0] + "/"), f"{name}: script not from the ConfigMap"
    return e
pvc = load("pvc.yaml")
assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
claim = pvc["metadata"]["name"]
shards = load("shards-job.yaml")
assert shards["apiVersion"] == "batch/v1" and shards["kind"] == "Job"
spec = shards["spec"]
assert spec["completionMode"] == "Indexed", "not an Indexed Job"
e = check_pod("shards-job.yaml", shards, claim)
n = int(e["NSED_SHARDS"])
assert spec["completions"] == n and spec["parallelism"] <= n, "completions/parallelism vs NSED_SHARDS"
for k in ("NSED_WORKFLOW", "NSED_QUESTIONS"):
    assert e[k].startswith("/"), k
merge = load("merge-job.yaml")
assert merge["kind"] == "Job" and "completionMode" not in merge["spec"]
m = check_pod("merge-job.yaml", merge, claim)
assert m["NSED_SHARED_DIR"] == e["NSED_SHARED_DIR"], "merge reads another shared folder"
PY

# --- 2. configuration errors ------------------------------------------------
expect_rc() { # expect_rc WANT NAME PATTERN COMMAND...
    local want=$1 name=$2 pat=$3 out rc
    shift 3
    out=$("$@" 2>&1)
    rc=$?
    if [ "$rc" = "$want" ] && grep -qF -- "$pat" <<<"$out"; then
        echo "PASS: $name"
    else
        echo "FAIL: $name: exit $rc (want $want), output: $out"
        fail=1
    fi
}
sh=$src/deploy/slurm/nsed-shard.sbatch
expect_rc 2 "shard script without NSED_SHARDS" "NSED_SHARDS is not set" \
    env -u NSED_SHARDS NSED_WORKFLOW=w NSED_QUESTIONS=q NSED_SHARED_DIR="$T/x" bash "$sh"
expect_rc 2 "shard script without a task index" "neither SLURM_ARRAY_TASK_ID" \
    env -u SLURM_ARRAY_TASK_ID -u JOB_COMPLETION_INDEX NSED_WORKFLOW=w NSED_QUESTIONS=q \
    NSED_SHARDS=4 NSED_SHARED_DIR="$T/x" bash "$sh"
expect_rc 2 "shard script with an index outside N" "outside NSED_SHARDS=4" \
    env JOB_COMPLETION_INDEX=4 NSED_WORKFLOW=w NSED_QUESTIONS=q NSED_SHARDS=4 \
    NSED_SHARED_DIR="$T/x" bash "$sh"
expect_rc 2 "merge script without NSED_SHARED_DIR" "NSED_SHARED_DIR is not set" \
    env -u NSED_SHARED_DIR bash "$src/deploy/slurm/nsed-merge.sbatch"
expect_rc 2 "submit.sh --resubmit outside the shards" "index 4 is outside --shards 4" \
    "$src/deploy/slurm/submit.sh" --workflow "$src/workflows/demo.yaml" \
    --questions "$src/workflows/demo-questions.jsonl" --shards 4 --shared "$T/s" --resubmit 4
expect_rc 0 "submit.sh --help" "--resubmit LIST" "$src/deploy/slurm/submit.sh" --help

# --- 3. the Kubernetes path by hand -----------------------------------------
wf=$src/workflows/demo.yaml
q=$src/workflows/demo-questions.jsonl
sed -e "s#^questions:.*#questions: $q#" -e 's/ttft_ms: 5,/ttft_ms: 30,/' \
    "$src/tests/sim/configs/demo-sim.yaml" >"$T/sim.yaml"
"$build/nsed-sim" --config "$T/sim.yaml" --port 0 >"$T/sim.out" 2>"$T/sim.err" &
SIM_PID=$!
for _ in $(seq 50); do grep -q '^listening on' "$T/sim.out" && break; sleep 0.1; done
port=$(sed -n 's/^listening on 127.0.0.1://p' "$T/sim.out")
[ -n "$port" ] || die "nsed-sim did not start"
export NSED_SIM_URL=http://127.0.0.1:$port/v1
export NSED="$nsed" NSED_WORKFLOW="$wf" NSED_QUESTIONS="$q" NSED_SHARDS=4
export NSED_SHARED_DIR="$T/shared" NSED_LOCAL_DIR="$T/local"
unset SLURM_ARRAY_TASK_ID SLURM_JOB_ID
for k in 0 1 3; do
    JOB_COMPLETION_INDEX=$k NSED_ARGS=-q bash "$sh" 2>"$T/shard-$k.err" ||
        { cat "$T/shard-$k.err"; die "shard $k failed"; }
done
# shard 2, slowly, stopped halfway by a SIGTERM to the script only
JOB_COMPLETION_INDEX=2 NSED_ARGS="-q --max-active 1" bash "$sh" 2>"$T/shard-2a.err" &
spid=$!
for _ in $(seq 300); do
    d=$(ls -d "$T"/local/nsed-*-shard-2-of-4 2>/dev/null | head -1)
    if [ -n "$d" ] && [ -f "$d/data.mdb" ]; then
        n=$("$nsed" status --store "$d" --json 2>/dev/null |
            "$py" -c 'import json, sys; print(json.load(sys.stdin)["questions"]["done"])' 2>/dev/null)
        [ "${n:-0}" -ge 2 ] && break
    fi
    sleep 0.1
done
kill -TERM "$spid"
wait "$spid"
rc=$?
check "a SIGTERM to the script stops nsed: exit 130 (got $rc)" test "$rc" = 130
check "the stopped shard's store is copied" grep -q "nsed exit 130; store copied" "$T/shard-2a.err"
check "no temporary copy left" test -z "$(ls -A "$T/shared" | grep -v '^shard-[0-3]$')"
rm -rf "$T"/local/nsed-*-shard-2-of-4
JOB_COMPLETION_INDEX=2 NSED_ARGS=-q bash "$sh" 2>"$T/shard-2b.err"
check "shard 2 rerun: done (exit $?)" test $? = 0
check "shard 2 rerun resumed from the shared copy" grep -q "resuming from the shared copy" "$T/shard-2b.err"
bash "$src/deploy/slurm/nsed-merge.sbatch" 2>"$T/merge.err" || { cat "$T/merge.err"; die "merge failed"; }
"$nsed" export --store "$T/shared/merged" >"$T/merged.jsonl"
"$nsed" run "$wf" --questions "$q" --store "$T/single" -q || die "single run failed"
"$nsed" export --store "$T/single" >"$T/single.jsonl"
check "merged export equals the single run's ($(wc -l <"$T/single.jsonl") lines)" \
    cmp "$T/merged.jsonl" "$T/single.jsonl"
[ "$fail" = 0 ] || exit 1
echo "test_deploy: all checks passed"
