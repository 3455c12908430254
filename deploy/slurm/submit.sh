#!/bin/bash
# submit.sh -- submit an nsed run as a Slurm job array (one shard per task)
# and a merge job that runs once every task succeeded.
#
#   submit.sh --workflow WF --questions FILE --shards N --shared DIR
#             [--nsed BIN] [--local DIR] [--args "NSED RUN ARGS"]
#             [--resubmit LIST] [--max-running M] [--parsable]
#             [-- SBATCH OPTIONS...]
#
#   --workflow WF     the workflow file (on shared storage)
#   --questions FILE  the question file (on shared storage)
#   --shards N        the number of shards; tasks 0..N-1
#   --shared DIR      shared storage: DIR/shard-K (a copy of each shard's
#                     store), DIR/merged (the merged store), DIR/logs
#   --nsed BIN        the nsed binary (default: nsed on PATH of the nodes)
#   --local DIR       node-local scratch for the stores (default: the
#                     node's ${TMPDIR:-/tmp})
#   --args "..."      extra arguments of nsed run (split on spaces)
#   --resubmit LIST   submit only these task indexes again (Slurm's
#                     --array syntax: 2 or 1,3 or 4-7), with a new merge job
#                     that depends on them; the other shards' copies are
#                     already on shared storage and the merge checks them
#   --max-running M   at most M tasks at once (--array=LIST%M), to spare
#                     the endpoints
#   --parsable        print only "ARRAY_JOB MERGE_JOB"
#   -- ...            options for both sbatch calls (--partition=gpu,
#                     --time=12:00:00, --gres=gpu:1, --account=...; not
#                     --array, which submit.sh sets)
#
# The merge job depends on each task (afterok:J_0:J_1:...), not on the whole
# array: Slurm never satisfies a whole-array afterok once any task failed,
# even after that task was requeued and succeeded.
#
# Exit status: 0 submitted, 1 sbatch failed, 2 bad usage.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "submit.sh: $*" >&2; exit 2; }

wf='' q='' n='' shared='' nsed='' local='' args='' resub='' throttle='' parsable=0
while [ $# -gt 0 ]; do
    case "$1" in
    --workflow) wf=${2:?}; shift 2 ;;
    --questions) q=${2:?}; shift 2 ;;
    --shards) n=${2:?}; shift 2 ;;
    --shared) shared=${2:?}; shift 2 ;;
    --nsed) nsed=${2:?}; shift 2 ;;
    --local) local=${2:?}; shift 2 ;;
    --args) args=${2?}; shift 2 ;;
    --resubmit) resub=${2:?}; shift 2 ;;
    --max-running) throttle=${2:?}; shift 2 ;;
    --parsable) parsable=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (try --help)" ;;
    esac
done
[ -n "$wf" ] && [ -n "$q" ] && [ -n "$n" ] && [ -n "$shared" ] ||
    die "--workflow, --questions, --shards and --shared are required (try --help)"
case "$n" in '' | 0 | *[!0-9]*) die "--shards must be a positive number, not '$n'" ;; esac
[ -f "$wf" ] || die "no workflow file $wf"
[ -f "$q" ] || die "no question file $q"
abs() { (cd "$(dirname "$1")" && printf '%s/%s' "$(pwd)" "$(basename "$1")"); }
wf=$(abs "$wf")
q=$(abs "$q")
mkdir -p "$shared/logs"
shared=$(cd "$shared" && pwd)

# the indexes of this submission, one per line (from Slurm's --array syntax,
# without a %limit or :step)
list=${resub:-0-$((n - 1))}
indexes() {
    local part a b
    for part in ${list//,/ }; do
        case "$part" in
        *-*) a=${part%-*}; b=${part#*-} ;;
        *) a=$part; b=$part ;;
        esac
        case "$a$b" in '' | *[!0-9]*) die "bad index list '$list'" ;; esac
        [ "$b" -lt "$n" ] || die "index $b is outside --shards $n (0-$((n - 1)))"
        seq "$a" "$b"
    done
}
idx=$(indexes)
case "$throttle" in 0 | *[!0-9]*) die "--max-running must be a positive number, not '$throttle'" ;; esac

export NSED_WORKFLOW=$wf NSED_QUESTIONS=$q NSED_SHARDS=$n NSED_SHARED_DIR=$shared
[ -n "$nsed" ] && export NSED=$nsed
[ -n "$local" ] && export NSED_LOCAL_DIR=$local
export NSED_ARGS=$args

# A merge job still waiting on an earlier submission can never run (a task
# it waits for failed): cancel it, this submission brings its own.
if [ -s "$shared/merge.jobid" ]; then
    old=$(cat "$shared/merge.jobid")
    if [ "$(squeue -h -j "$old" -o %T 2>/dev/null)" = PENDING ]; then
        scancel "$old" 2>/dev/null || true
    fi
fi

J=$(sbatch --parsable --array="$list${throttle:+%$throttle}" --export=ALL \
    --output="$shared/logs/shard-%a.%A.out" "$@" "$here/nsed-shard.sbatch") ||
    { echo "submit.sh: sbatch of the array failed" >&2; exit 1; }
J=${J%%;*}
dep=afterok$(for i in $idx; do printf ':%s_%s' "$J" "$i"; done)
M=$(sbatch --parsable --dependency="$dep" --export=ALL \
    --output="$shared/logs/merge.%j.out" "$@" "$here/nsed-merge.sbatch") ||
    { echo "submit.sh: sbatch of the merge job failed (array $J is queued)" >&2; exit 1; }
M=${M%%;*}
echo "$M" >"$shared/merge.jobid"
if [ "$parsable" = 1 ]; then
    echo "$J $M"
else
    echo "array job $J: tasks $list of $n, logs in $shared/logs"
    echo "merge job $M: after $dep, into $shared/merged"
fi
