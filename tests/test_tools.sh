#!/usr/bin/env bash
# test_tools.sh -- the checkers of tools/ on small planted trees.
#
#   tests/test_tools.sh [CC]
#
# check-layers and check-links run on the fixture trees of tests/data/layers
# and tests/data/links; check-style runs in a scratch git repository. Each
# planted fault must fail its checker (exit 1) with the right message, and
# each clean tree must pass. CC (default cc) compiles the call-cycle
# fixture for check-layers' nm pass.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
cc=${1:-cc}
layers=$src/tests/data/layers
links=$src/tests/data/links
tmp=$(mktemp -d "${TMPDIR:-/tmp}/nsed-tools-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failed=0
passed=0

# expect WANT_RC NAME PATTERN COMMAND...: COMMAND exits WANT_RC and prints
# a line containing PATTERN (fixed string).
expect() {
    local want=$1 name=$2 pattern=$3 out rc
    shift 3
    out=$("$@" 2>&1)
    rc=$?
    if [ "$rc" -ne "$want" ] || ! grep -qF -- "$pattern" <<<"$out"; then
        echo "FAIL $name: exit $rc (want $want), output lacks '$pattern':"
        printf '%s\n' "$out" | sed 's/^/    /'
        failed=$((failed + 1))
    else
        echo "ok   $name"
        passed=$((passed + 1))
    fi
}

# ---- check-layers --------------------------------------------------------

cl=$src/tools/check-layers
expect 0 "layers: clean tree passes and prints the room order" \
    "rooms bottom-up: pipeline/base < store < pipeline/top" \
    "$cl" --root "$layers/clean"
expect 1 "layers: include cycle" \
    "include cycle: pipeline/base/one.h -> pipeline/base/two.h (pipeline/base/one.h:1) -> pipeline/base/three.h (pipeline/base/two.h:1) -> pipeline/base/one.h (pipeline/base/three.h:1)" \
    "$cl" --root "$layers/include_cycle"
expect 1 "layers: room cycle" \
    "room cycle: pipeline/base -> store (pipeline/base/low.c:2 includes store/keep.h) -> pipeline/base (store/keep.c:1 includes pipeline/base/low.h)" \
    "$cl" --root "$layers/room_cycle"
expect 1 "layers: private header in another room" \
    "pipeline/cli/cli.c:1: includes the private header pipeline/top/top_int.h from outside its room pipeline/top" \
    "$cl" --root "$layers/private_leak"
expect 1 "layers: private header in another room's test" \
    "tests/test_cli.c:1: includes the private header pipeline/top/top_int.h" \
    "$cl" --root "$layers/private_leak"
expect 1 "layers: private leaks are counted, the white-box test is not" \
    "FAILED: 2 problem(s)" \
    "$cl" --root "$layers/private_leak"
# fuzz/: a room's harness may use its private header, another's may not
fz=$tmp/fuzz_room
mkdir -p "$fz/pipeline/top" "$fz/fuzz"
printf 'int top_inner(void);\n' >"$fz/pipeline/top/top_int.h"
printf '#include "pipeline/top/top_int.h"\n' >"$fz/pipeline/top/top.c"
printf '#include "pipeline/top/top_int.h"\n' >"$fz/fuzz/fuzz_top.c"
expect 0 "layers: a room's fuzz harness may include its private header" \
    "check-layers: ok" "$cl" --root "$fz"
printf '#include "fuzz/fuzz.h"\n#include "pipeline/top/top_int.h"\n' >"$fz/fuzz/fuzz_cli.c"
printf '/* shared */\n' >"$fz/fuzz/fuzz.h"
expect 1 "layers: another room's fuzz harness may not" \
    "fuzz/fuzz_cli.c:2: includes the private header pipeline/top/top_int.h from outside its room pipeline/top" \
    "$cl" --root "$fz"
expect 1 "layers: only that harness is counted" "FAILED: 1 problem(s)" "$cl" --root "$fz"
expect 1 "layers: a room using one added after it in CMakeLists.txt" \
    "pipeline/base/low.c:1: includes store/keep.h, but store is added after pipeline/base in CMakeLists.txt" \
    "$cl" --root "$layers/order"

# the call cycle: compiled into a CMake-like build tree
obj=$tmp/build/pipeline/base/CMakeFiles/nsed_base.dir
mkdir -p "$obj"
for f in ping pong; do
    "$cc" -I "$layers/call_cycle" -c "$layers/call_cycle/pipeline/base/$f.c" -o "$obj/$f.c.o" ||
        { echo "FAIL cannot compile the call-cycle fixture with $cc"; exit 1; }
done
expect 0 "layers: a call cycle is invisible in the includes" "check-layers: ok" \
    "$cl" --root "$layers/call_cycle"
expect 1 "layers: call cycle between object files" \
    "call cycle among 2 object files: pipeline/base/ping.c, pipeline/base/pong.c" \
    "$cl" --root "$layers/call_cycle" "$tmp/build"
expect 1 "layers: call cycle names the symbols" \
    "pipeline/base/pong.c -> pipeline/base/ping.c (ping)" \
    "$cl" --root "$layers/call_cycle" "$tmp/build"
expect 2 "layers: build directory without objects" "no object files" \
    "$cl" --root "$layers/clean" "$tmp"

# ---- check-links ---------------------------------------------------------

ck=$src/tools/check-links
expect 0 "links: clean tree passes" "ok: 6 relative link(s) in 2 file(s) resolve" \
    "$ck" --root "$links/clean"
expect 1 "links: missing file" "README.md:21: (missing.md): no file or folder missing.md" \
    "$ck" --root "$links/mixed"
expect 1 "links: missing anchor in the same file" \
    "README.md:21: (#not-there): no heading #not-there in README.md" \
    "$ck" --root "$links/mixed"
expect 1 "links: missing anchor in another file" \
    "README.md:21: (docs/a.md#final-answers): no heading #final-answers in docs/a.md" \
    "$ck" --root "$links/mixed"
expect 1 "links: reference definitions are checked" \
    "README.md:20: (docs/a.md#missing): no heading #missing in docs/a.md" \
    "$ck" --root "$links/mixed"
# the other 11 links of mixed/README.md (GitHub anchors of dashes,
# duplicates, code and link markup, setext headings, <a name>, titles,
# %20, folders) resolve; code blocks and spans are skipped
expect 1 "links: only the planted faults" "FAILED: 4 broken link(s) of 15 in 3 file(s)" \
    "$ck" --root "$links/mixed"

# ---- check-style ---------------------------------------------------------

if ! command -v clang-format >/dev/null || ! command -v git >/dev/null; then
    echo "skip check-style: clang-format or git missing"
else
    repo=$tmp/repo
    mkdir -p "$repo/tools" "$repo/pipeline/base" "$repo/bench"
    cp "$src/tools/check-style" "$repo/tools/"
    cp "$src/.clang-format" "$repo/"
    # badly formatted, but older than the base: not checked
    printf 'int  old (void) { return 1; }\n' >"$repo/pipeline/base/old.c"
    git -C "$repo" init -q
    git -C "$repo" add -A
    git -C "$repo" -c user.name=t -c user.email=t@t commit -qm base
    expect 0 "style: an untouched, unformatted file is not checked" "check-style: ok" \
        "$repo/tools/check-style"
    printf '%s\n' '#include <stdio.h>' '' 'int ok_fn(char *buf, size_t n, const char *s)' \
        '{' '    return snprintf(buf, n, "%s", s); /* not sprintf(buf, s) */' '}' \
        >"$repo/pipeline/base/new.c"
    expect 0 "style: a new formatted file passes" "check-style: ok" "$repo/tools/check-style"
    git -C "$repo" add -A
    git -C "$repo" -c user.name=t -c user.email=t@t commit -qm second
    expect 0 "style: the last commit is checked when there is no main" \
        "formatting: 1 changed file(s)" "$repo/tools/check-style"
    printf 'int  bad (void) { return 2; }\n' >>"$repo/pipeline/base/new.c"
    expect 1 "style: a changed line is formatted" \
        "pipeline/base/new.c: changed lines not formatted" "$repo/tools/check-style" HEAD
    git -C "$repo" checkout -q -- pipeline/base/new.c
    printf '/* a formatted line */\n' >>"$repo/pipeline/base/old.c"
    expect 0 "style: only the changed lines of an old file" "check-style: ok" \
        "$repo/tools/check-style" HEAD
    expect 1 "style: --whole-files checks the rest of a changed file" \
        "pipeline/base/old.c is not formatted" "$repo/tools/check-style" --whole-files HEAD
    git -C "$repo" checkout -q -- pipeline/base/old.c
    printf 'int f(const char *s)\n{\n    return atoi(s);\n}\n' >"$repo/bench/b.c"
    expect 1 "style: banned function" "bench/b.c:3: calls the banned function atoi()" \
        "$repo/tools/check-style"
    printf '/* %0100d */\n' 0 >"$repo/bench/b.c"
    expect 1 "style: long line" "bench/b.c:1: line of 106 columns (at most 100)" \
        "$repo/tools/check-style"
    rm "$repo/bench/b.c"
    expect 0 "style: clean again" "check-style: ok" "$repo/tools/check-style"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
