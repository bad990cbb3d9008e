#!/usr/bin/env bash
# Reproduces experiments/risk-control from a fresh clone after `make setup`, from the journals of
# experiments/hs2-distill/eval/ (the shipped default's readouts, the untrained readout and the baselines on the
# held-out sample of `see eval-labels --limit 400`): Learn-then-Test's validity per score on 200 halvings, the
# hand-set policy's decisions, risk-coverage curves. Fits nothing that ships (~2 min, no server).
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python experiments/risk-control/study.py
