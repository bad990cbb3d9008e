#!/usr/bin/env bash
# Reproduces experiments/risk-control from a fresh clone after `make setup` (and experiments/hs2-distill, whose
# eval/ journals hold the test part's readouts and baselines).
# 1. score the calibration part of the held-out half with the shipped default (~25 min on 2 CPU cores; resumes),
# 2. fit the shipped certified policy on it (targets fixed before fitting from the TRAIN half's bad rate, 0.36:
#    accept promise ~ half of it, 0.2; not-escalated promise ~ 0.8 of it, 0.3),
# 3. check it on the test part and run the 200-split study with the baselines.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=experiments/risk-control
.venv/bin/see calibrate policy --model SmolLM2-135M-Instruct-hs2-distill --source dataset --half eval.json \
  --test-limit 400 --scores "$here/calibration/scores_see-distilled.jsonl" \
  --scores experiments/hs2-distill/eval/scores_see-distilled.jsonl \
  --target-risk 0.2 --review-risk 0.3 --delta 0.05 --bad-at-or-below 4 \
  --out selfeval/deltas/hs2-distill/see_policy.json
.venv/bin/python "$here/study.py"
