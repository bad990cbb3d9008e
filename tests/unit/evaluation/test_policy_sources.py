"""Where `see calibrate policy --source dataset` may fit: never a row the checkpoint was trained on, never the
half it is checked on. Runs the real command on journals committed in the repository (no server)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from seecli.calibrate_policy import recorded_calibration_groups, trained_half
from selfeval.card import CARD_FILENAME, ModelCard
from selfeval.models import SHIPPED_DELTA_DIR

REPO = Path(__file__).resolve().parents[3]
ATTEMPT3 = REPO / "experiments/hs2-distill/eval-attempt3"  # trained with sft.calibration_fraction=0.3


def shipped_card() -> dict:
    return json.loads((SHIPPED_DELTA_DIR / "delta.json").read_text(encoding="utf-8"))["card"]


def calibrate(model_dir, *args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "seecli.main", "calibrate", "policy", "--model", str(model_dir), *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def said(result: subprocess.CompletedProcess) -> str:
    """stdout and stderr as one line, without the borders of typer's error box."""
    return " ".join((result.stdout + result.stderr).replace("│", " ").split())


def test_cards_record_the_trained_half_and_the_calibration_prompts():
    shipped = ModelCard.from_dict(shipped_card())
    assert trained_half(shipped) == "train.json" and recorded_calibration_groups(shipped) == set()
    attempt3 = ModelCard.from_dict(json.loads((ATTEMPT3 / CARD_FILENAME).read_text(encoding="utf-8")))
    assert trained_half(attempt3) == "train.json" and len(recorded_calibration_groups(attempt3)) == 150


def test_fitting_on_the_half_a_card_trained_on_is_refused_without_recorded_calibration_prompts(tmp_path):
    (tmp_path / CARD_FILENAME).write_text(json.dumps(shipped_card()), encoding="utf-8")
    refused = calibrate(tmp_path, "--out", str(tmp_path / "p.json"))
    assert refused.returncode == 2 and "trained on the train.json half" in said(refused)
    assert "records no calibration prompts" in said(refused) and not (tmp_path / "p.json").exists()


def test_a_fit_on_the_test_sample_itself_is_refused(tmp_path):
    (tmp_path / CARD_FILENAME).write_text(json.dumps(shipped_card()), encoding="utf-8")
    refused = calibrate(tmp_path, "--half", "eval.json", "--test-half", "eval.json", "--test-limit", "0")
    assert refused.returncode == 2 and "no labelled answer left to fit on" in said(refused)


def test_the_recorded_calibration_prompts_are_fitted_on_and_an_uncertifiable_target_is_refused(tmp_path):
    """Attempt 3's real readouts: its 150 calibration prompts (300 answers) cannot certify P(bad | accept) <= 0.2."""
    shutil.copy(ATTEMPT3 / CARD_FILENAME, tmp_path / CARD_FILENAME)
    refused = calibrate(
        tmp_path, "--scores", str(ATTEMPT3 / "calibration_scores_see-distilled.jsonl"),
        "--test-scores", str(ATTEMPT3 / "scores_see-distilled.jsonl"), "--target-risk", "0.2",
        "--review-risk", "0.3", "--out", str(tmp_path / "p.json"),
    )  # fmt: skip
    assert "calibration prompts recorded in the card (150, never trained on)" in said(refused)
    assert "300 answers to fit on, 400 to test on" in said(refused)
    assert refused.returncode == 1 and "nothing written" in said(refused) and not (tmp_path / "p.json").exists()
    assert "labelled answers would be needed" in said(refused)
