#!/usr/bin/env bash
# Reproduces experiments/hs2-distill from a fresh clone on a 2-core CPU machine (after `make setup`).
# 1. train the delta (train half only; ~1 h), 2. ship it as the default, 3. evaluate on the held-out half.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
.venv/bin/see train --config hs2-distill --run-dir runs/hs2-distill
echo "training wall time: $(( $(date +%s) - start )) s"
mkdir -p selfeval/deltas/hs2-distill
cp runs/hs2-distill/delta/delta.safetensors runs/hs2-distill/delta/delta.json selfeval/deltas/hs2-distill/
.venv/bin/see model prepare
start=$(date +%s)
.venv/bin/see eval-labels --out experiments/hs2-distill/eval
echo "evaluation wall time: $(( $(date +%s) - start )) s"
