#!/usr/bin/env bash
# test_llama_prefix.sh -- nsed status's prefix-cache sums (prompt and cached
# tokens by kind of call) are what a real llama-server reported.
#
#   tests/test_llama_prefix.sh BUILD_DIR
#
# Writes three tiny random-weight models with ../shared/tools/llama's
# generator (or $NSED_LLAMA_DIR's), starts that llama-server in router mode
# on a free 127.0.0.1 port, and puts a logging reverse proxy (Python,
# standard library) between it and nsed. The proxy forwards every request
# unchanged and writes one line per reply: the HTTP status, the model, the
# kind of call as the prompt text tells it (the last user message: the
# repair prompt's opening, the evaluation's "Review the candidate
# answers", the revision's "You answered it before", else the proposal's
# "Solve the question below.") and the reply's usage.prompt_tokens and
# usage.prompt_tokens_details.cached_tokens. nsed runs a demo-like
# workflow through the proxy; then `nsed status --json`'s
# prefix_cache.by_kind (calls, prompt_tokens, cached_tokens), each model's
# by_kind, the totals and the `prefix:` line of `nsed status` must equal
# the sums over the proxy's 200 replies. The server must have reported
# cached tokens for every kind (the sums would otherwise agree trivially
# at zero). Skips (77) with one line when the llama tools or
# /usr/bin/python3 are missing.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
tools=${NSED_LLAMA_DIR:-$src/../shared/tools/llama}
py=/usr/bin/python3
N=8
for f in "$tools/llama-server" "$py"; do
    [ -x "$f" ] || { echo "test_llama_prefix: SKIP: no $f"; exit 77; }
done
[ -r "$tools/gen_tiny_gguf.py" ] ||
    { echo "test_llama_prefix: SKIP: no $tools/gen_tiny_gguf.py"; exit 77; }
dir=$(mktemp -d /tmp/nsed-llama-prefix-XXXXXX)
server_pid=
proxy_pid=
cleanup() {
    [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null
    # the router stops the model servers it started
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
fail() {
    echo "test_llama_prefix: FAIL: $*"
    exit 1
}

mkdir -p "$dir/models"
for s in 1 2 3; do
    # a model's context is what the server gives a slot at most: 4096
    # holds the longest repair prompt of these byte-level tokenizers
    "$py" "$tools/gen_tiny_gguf.py" "$dir/models/tiny-$s.gguf" --seed $s \
        --eos-bias 0.6 --ctx 4096 >/dev/null || fail "the generator failed"
done
port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$tools/llama-server" --models-dir "$dir/models" --host 127.0.0.1 \
    --port "$port" -c 16384 -np 4 -t 1 --no-webui --no-jinja \
    >"$dir/server.log" 2>&1 </dev/null &
server_pid=$!
for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || fail "llama-server exited: $(tail -3 "$dir/server.log")"
    sleep 0.1
done
curl -sf "http://127.0.0.1:$port/health" >/dev/null || fail "llama-server gave no /health"

cat >"$dir/proxy.py" <<'EOF'
import http.client, http.server, json, os, sys, threading

upstream, portfile, logpath = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = threading.Lock()
log = open(logpath, "a")
local = threading.local()


def kind_of(req):
    users = [m["content"] for m in req["messages"] if m["role"] == "user"]
    last = users[-1] if users else ""
    if last.startswith("Your previous reply could not be used"):
        return "repair"
    if "Review the candidate answers" in last:
        return "evaluate"
    if "You answered it before" in last:
        return "revise"
    if "Solve the question below." in last:
        return "propose"
    return "unknown"


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def forward(self, method, body):
        c = getattr(local, "conn", None)
        if c is None:
            c = local.conn = http.client.HTTPConnection("127.0.0.1", upstream,
                                                        timeout=300)
        try:
            c.request(method, self.path, body,
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            local.conn = None
            return 502, b""

    def reply(self, status, data):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # the preflight's /v1/models
        self.reply(*self.forward("GET", None))

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status, data = self.forward("POST", body)
        req = json.loads(body)
        line = {"status": status, "model": req["model"], "kind": kind_of(req)}
        if status == 200:
            u = json.loads(data)["usage"]
            line["prompt_tokens"] = u["prompt_tokens"]
            line["cached_tokens"] = (u.get("prompt_tokens_details") or
                                     {}).get("cached_tokens", 0)
        with lock:
            log.write(json.dumps(line) + "\n")
            log.flush()
        self.reply(status, data)


s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
s.daemon_threads = True
with open(portfile + ".tmp", "w") as f:
    f.write("%d\n" % s.server_address[1])
os.rename(portfile + ".tmp", portfile)
s.serve_forever()
EOF
"$py" "$dir/proxy.py" "$port" "$dir/proxy.port" "$dir/calls.jsonl" 2>"$dir/proxy.err" &
proxy_pid=$!
for _ in $(seq 100); do
    [ -s "$dir/proxy.port" ] && break
    sleep 0.05
done
[ -s "$dir/proxy.port" ] || fail "the proxy did not start: $(cat "$dir/proxy.err")"
pport=$(cat "$dir/proxy.port")

# workflows/demo.yaml's team (three models, one seat each, the default
# prompts) on the tiny models, with short replies and two rounds
{
    echo "name: llama-prefix"
    echo "version: 1"
    echo "seed: 42"
    echo "models:"
    for m in 1 2 3; do
        id=$(echo alpha beta gamma | cut -d' ' -f$m)
        echo "  - {id: $id, endpoint: \"http://127.0.0.1:$pport/v1\", model: tiny-$m,"
        echo "     family: $id, max_concurrency: 4, structured_output: true,"
        echo "     sampling: {max_tokens: 48}}"
    done
    echo "broker: {policy: fixed}"
    echo "teams:"
    echo "  main:"
    echo "    roles:"
    echo "      - {name: solver, count: 3, persona: \"You are a careful mathematician.\","
    echo "         models: [alpha, beta, gamma]}"
    echo "rounds: {min: 1, max: 2, stop: {consensus_margin: 0.6, stable_answer: 2}}"
    echo "answer: {extract: boxed, compare: numeric}"
} >"$dir/wf.yaml"
head -n $N "$src/workflows/demo-questions.jsonl" >"$dir/q.jsonl"

"$build/nsed" run "$dir/wf.yaml" --questions "$dir/q.jsonl" --store "$dir/st" \
    >"$dir/run.out" 2>&1
rc=$?
# random-weight models give no answers: questions fail (3) or stay
# incomplete (1); anything else is a broken run
case $rc in
0 | 1 | 3) ;;
*) fail "nsed run exited $rc: $(tail -3 "$dir/run.out")" ;;
esac
# the proxy has written every reply before nsed got it
"$build/nsed" status --store "$dir/st" --json >"$dir/status.json" ||
    fail "nsed status --json failed"
"$build/nsed" status --store "$dir/st" >"$dir/status.txt" ||
    fail "nsed status failed"

"$py" - "$dir" <<'EOF' || exit 1
import json, re, sys

d = sys.argv[1]
calls = [json.loads(l) for l in open(d + "/calls.jsonl")]
st = json.load(open(d + "/status.json"))
ids = {"tiny-1": "alpha", "tiny-2": "beta", "tiny-3": "gamma"}
bad = []


def check(what, got, want):
    if got != want:
        bad.append("%s: status says %r, the proxy counted %r" % (what, got, want))


def sums(rows):
    out = {}
    for c in rows:
        if c["status"] != 200:
            continue
        e = out.setdefault(c["kind"], [0, 0, 0])
        e[0] += 1
        e[1] += c["prompt_tokens"]
        e[2] += c["cached_tokens"]
    return out


def by_kind(obj):
    return {k: [v["calls"], v["prompt_tokens"], v["cached_tokens"]]
            for k, v in obj.get("by_kind", {}).items()}


unknown = [c for c in calls if c["kind"] == "unknown"]
if unknown:
    bad.append("%d requests of no known kind" % len(unknown))
want = sums(calls)
for kind in ("propose", "revise", "evaluate"):
    if kind not in want:
        bad.append("no %s call answered" % kind)
    elif want[kind][2] <= 0:
        bad.append("the server reported no cached token on %s calls" % kind)
pc = st["prefix_cache"]
check("prefix_cache.by_kind", by_kind(pc), want)
check("prefix_cache.prompt_tokens", pc["prompt_tokens"],
      sum(v[1] for v in want.values()))
check("prefix_cache.cached_tokens", pc["cached_tokens"],
      sum(v[2] for v in want.values()))
for model, mid in ids.items():
    check("models.%s.by_kind" % mid, by_kind(st["models"][mid]),
          sums(c for c in calls if c["model"] == model))
# the text line: "prefix: ... by kind of call: propose 0.586, revise ..."
line = [l for l in open(d + "/status.txt") if l.startswith("prefix:")]
if len(line) != 1:
    bad.append("nsed status has %d prefix: lines" % len(line))
else:
    shown = dict(re.findall(r"([a-z_]+) (\d\.\d{3})\b", line[0]))
    check("the prefix: line", shown,
          {k: "%.3f" % (v[2] / v[1]) for k, v in want.items()})
ok = sum(1 for c in calls if c["status"] == 200)
if bad:
    print("test_llama_prefix: FAIL:\n  " + "\n  ".join(bad))
    sys.exit(1)
print("test_llama_prefix: ok: %d replies (%d not 200) agree by kind: %s" % (
    ok, len(calls) - ok, ", ".join("%s %d/%d" % (k, v[2], v[1])
                                    for k, v in sorted(want.items()))))
EOF
