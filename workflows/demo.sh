#!/usr/bin/env bash
# demo.sh -- the demo: validate the demo workflow and questions, create a run
# store and ingest the questions, then show the store's status.
# Run by `./setup.sh --demo` after the build; safe to run again (ingestion is
# idempotent). The store goes to $NSED_DEMO_STORE (default ./demo-store).
set -euo pipefail
cd "$(dirname "$0")/.."
NSED=./build/nsed
STORE=${NSED_DEMO_STORE:-demo-store}

echo "== nsed validate"
$NSED validate --quiet workflows/demo.yaml workflows/demo-questions.jsonl
echo
echo "== nsed ingest"
$NSED ingest workflows/demo.yaml --questions workflows/demo-questions.jsonl \
    --store "$STORE"
echo
echo "== nsed status"
$NSED status --store "$STORE"
