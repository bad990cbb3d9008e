#!/usr/bin/env bash
# The CPU experiment of the evaluation harness: the default model before and after `see train --config cpu-smoke`,
# evaluated on the held-out HelpSteer2 half against the deterministic rule-based judge, re-judged by a second
# rule-based judge (cross-judge check), compared side by side. Results are copied next to this script.
# Usage: experiments/cpu-smoke/run.sh [N_PROMPTS]   (from the repository root, after `make setup`; ~30 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100}
SEE=.venv/bin/see
WORK=runs/experiment-cpu-smoke
HERE=experiments/cpu-smoke
mkdir -p "$WORK"
$SEE judge rule-based --port 8100 >"$WORK/judge.log" 2>&1 &
JUDGE=$!
$SEE judge rule-based --port 8101 --variant rule-based-judge-v1-strict >"$WORK/judge-strict.log" 2>&1 &
STRICT=$!
trap 'kill $JUDGE $STRICT 2>/dev/null || true' EXIT
sleep 3
BASE_MODEL=$(.venv/bin/python -c "from selfeval.models import prepare_default_model; print(prepare_default_model())" | tail -1)
$SEE train --config cpu-smoke --run-dir "$WORK/train" --set judge.base_url=http://127.0.0.1:8100/v1
EVAL=(--prompts helpsteer2-heldout --limit "$N" --max-tokens 128 --concurrency 8)
$SEE eval --model "$BASE_MODEL" --label base --judge http://127.0.0.1:8100/v1 --out "$WORK/base" "${EVAL[@]}"
$SEE eval --model "$WORK/train/final" --label cpu-smoke --judge http://127.0.0.1:8100/v1 --out "$WORK/trained" \
  --baseline "$WORK/base" "${EVAL[@]}"
for run in base trained; do
  label=$([ "$run" = base ] && echo base || echo cpu-smoke)
  extra=$([ "$run" = trained ] && echo "--baseline $WORK/base-strict" || true)
  $SEE eval --answers-from "$WORK/$run" --label "$label" --judge http://127.0.0.1:8101/v1 --out "$WORK/$run-strict" \
    --prompts helpsteer2-heldout --limit "$N" --max-tokens 128 $extra
done
$SEE eval-compare "$WORK/base" "$WORK/trained" "$WORK/base-strict" "$WORK/trained-strict" --out "$WORK/comparison"
for run in base trained base-strict trained-strict; do
  mkdir -p "$HERE/$run"
  cp -r "$WORK/$run/report.md" "$WORK/$run/metrics.json" "$WORK/$run/plots" "$HERE/$run/"
done
cp "$WORK/comparison/comparison.md" "$WORK/comparison/comparison.json" "$HERE/"
echo "results in $HERE"
