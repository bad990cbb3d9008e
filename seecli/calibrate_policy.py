"""`see calibrate policy`: fit accept / review / escalate thresholds with a guarantee, check them, write them.

Judged answers come from a human-labelled dataset (scored by the model through its own `/v1/score`, journaled
and resumable) or from the ledger's judge verdicts. A dataset's calibration part is one half of it, and of the
half the checkpoint was trained on only the prompts its card records as calibration prompts (never trained
on); its test part is another half (default: the held-out one, which never fits anything). The thresholds
are fitted on the calibration part
(`evaluation/risk_control.py`: Learn-then-Test, exact binomial p-values), their realised risk and coverage
are measured on the disjoint test part, and the policy is written beside the card as `see_policy.json`
(fingerprinted to the checkpoint and its calibration map). A target the data cannot certify is refused with
how many labelled answers would certify it. A running server picks the policy up at restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _realised(cell: dict | None) -> str:
    if not cell or cell["risk"] is None:
        return "-"
    low, high = cell["risk_interval"]
    return f"{_percent(cell['risk'])} [{100 * low:.1f}, {100 * high:.1f}] of {cell['passing']}"


def candidates_table(rows: list[dict]) -> Table:
    table = Table(title="candidate scores (calibration part -> test part)")
    for column in ("score", "accept threshold", "certified bound", "calibration accepts", "test: bad | accept",
                   "test accepts", "escalate below", "test: bad | not escalated"):  # fmt: skip
        table.add_column(column, justify="left" if column == "score" else "right")
    for row in rows:
        accept, escalate, test = row["accept"], row["escalate_below"], row.get("test_accept")
        table.add_row(
            row["score"],
            f"{accept.threshold:.3f}" if accept else "none certified",
            f"{accept.bound:.3f} ({accept.bad}/{accept.n})" if accept else "-",
            _percent(row["calibration_coverage"]),
            _realised(test),
            _percent(test["coverage"]) if test else "-",
            f"{escalate.threshold:.3f}" if escalate else "-",
            _realised(row.get("test_not_escalated")),
        )
    return table


def policy(
    model: str = typer.Option(
        "SmolLM2-135M-Instruct-hs2-distill", help="Checkpoint DIR or provisioned model name; the policy goes there"
    ),
    source: str = typer.Option("dataset", help="dataset (human labels, scored via /v1/score) or ledger (verdicts)"),
    target_risk: float = typer.Option(0.1, min=0.001, max=0.999, help="Promise P(bad | accept) <= this"),
    delta: float = typer.Option(0.05, min=0.0001, max=0.5, help="... with probability >= 1 - delta"),
    bad_at_or_below: int = typer.Option(4, min=0, max=8, help="An answer is bad when judge helpfulness <= this"),
    review_risk: float | None = typer.Option(
        None, min=0.001, max=0.999, help="Also escalate, so that P(bad | not escalated) <= this (unset: no escalate)"
    ),
    score: str = typer.Option("auto", help="quality, helpfulness_above, or auto (both tried; delta split)"),
    data: Path | None = typer.Option(None, help="dataset: labelled HelpSteer2 jsonl(.gz) (default: the shipped one)"),
    half: str = typer.Option(
        "train.json",
        help="dataset: the half to fit on; of the half MODEL was trained on, only the calibration prompts its card "
        "records (never a trained row)",
    ),
    test_half: str = typer.Option("eval.json", help="dataset: the half the policy is checked on (never fitted on)"),
    test_limit: int = typer.Option(
        400, min=0, help="dataset: check on the seeded sample `see eval-labels --limit N` scores (0: the whole half)"
    ),
    scores: list[Path] = typer.Option(
        [],
        help="dataset: /v1/score journal of the fitted half (resumable; default runs/policy/CARD/HALF.jsonl); "
        "repeat to read several, the first takes what is still unscored",
    ),  # fmt: skip
    test_scores: list[Path] = typer.Option(
        [], help="dataset: the same for the test half (an eval-labels journal of MODEL works)"
    ),
    ledger: str | None = typer.Option(None, help="ledger: path or postgresql:// DSN (default: $SEE_LEDGER__URL)"),
    judge: str | None = typer.Option(None, help="ledger: only this judge's verdicts"),
    test_share: float = typer.Option(0.4, min=0.05, max=0.9, help="ledger: share of answers kept for the test"),
    raw: bool = typer.Option(False, help="Fit on raw scores even when the model has a calibration map"),
    seed: int = typer.Option(0, help="Seed of the splits"),
    out: Path | None = typer.Option(None, help="Write here instead of MODEL/see_policy.json"),
) -> None:
    """Fit a certified accept / review / escalate policy for MODEL."""
    from evaluation.policy_fit import PolicyRequest, fit_policy
    from evaluation.risk_control import RiskControlError
    from seecli.eval_labels import checkpoint_dir
    from selfeval.calibration import CalibrationError, calibration_path, card_fingerprint, load_calibration
    from selfeval.card import CardError, load_card
    from selfeval.certified_policy import SCORES, policy_path, write_policy

    if source not in ("dataset", "ledger"):
        raise typer.BadParameter("dataset or ledger", param_hint="--source")
    if score != "auto" and score not in SCORES:
        raise typer.BadParameter(f"auto or one of {list(SCORES)}", param_hint="--score")
    if review_risk is not None and review_risk <= target_risk:
        raise typer.BadParameter("must be above --target-risk (accepted answers are not escalated)", "--review-risk")
    model_dir = checkpoint_dir(model)
    try:
        card = load_card(model_dir)
        mapping = (
            None if raw or not calibration_path(model_dir).is_file() else load_calibration(calibration_path(model_dir))
        )
    except (CardError, CalibrationError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from None
    fingerprint = card_fingerprint(card)
    if source == "dataset":
        halves = DatasetHalves(data, half, test_half, test_limit, scores, test_scores)
        calibration_part, test_part, described = _from_dataset(model_dir, card, fingerprint, halves)
    else:
        calibration_part, test_part, described = _from_ledger(fingerprint, ledger, judge, test_share, seed)
    console.print(f"{described}: {len(calibration_part)} answers to fit on, {len(test_part)} to test on")
    request = PolicyRequest(target_risk, delta, bad_at_or_below, review_risk, score, seed)
    try:
        fitted, rows = fit_policy(
            calibration_part, test_part, request, card_fingerprint=fingerprint, model_name=card.model_name,
            calibration=mapping, source=described,
        )  # fmt: skip
    except RiskControlError as exc:
        console.print(f"[red]{exc}; nothing written[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(candidates_table(rows))
    path = write_policy(out or policy_path(model_dir), fitted)
    console.print(f"{fitted.accept_guarantee()} ({fitted.score} >= {fitted.accept.threshold:.3f})")
    if fitted.review_guarantee():
        console.print(f"{fitted.review_guarantee()} ({fitted.score} >= {fitted.escalate_below.threshold:.3f})")
    console.print(f"wrote {path} ({fitted.version}); restart the server to decide with it")


@dataclass(frozen=True)
class DatasetHalves:
    data: Path | None
    half: str
    test_half: str
    test_limit: int
    scores: list[Path]
    test_scores: list[Path]


def trained_half(card) -> str | None:
    """The half of the labelled set a labels-distill checkpoint was trained on (None for any other card)."""
    config = card.lineage.config or {}
    if (config.get("run") or {}).get("mode") != "labels-distill":
        return None
    return (config.get("data") or {}).get("kitware_file")


def recorded_calibration_groups(card) -> set[int]:
    return set(((card.lineage.metrics or {}).get("rows") or {}).get("calibration_groups") or [])


def _from_dataset(model_dir: Path, card, fingerprint: str, halves: DatasetHalves):
    from evaluation.labelled import labelled_items
    from evaluation.policy_fit import from_journal
    from training.data import DataError, default_dataset

    path = halves.data or default_dataset()
    limit = halves.test_limit or None
    try:
        items = labelled_items(path, halves.half)
        test_items = labelled_items(path, halves.test_half, limit)
    except DataError as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from None
    fitted_on = f"{Path(path).name} [{halves.half}]"
    if halves.half == trained_half(card):
        groups = recorded_calibration_groups(card)
        if not groups:
            raise typer.BadParameter(
                f"{card.model_name} was trained on the {halves.half} half and its card records no calibration "
                "prompts (scores of trained rows are optimistic): fit on another labelled half (--half), or "
                "retrain with sft.calibration_fraction > 0",
                param_hint="--half",
            )
        items = [i for i in items if i.group in groups]
        fitted_on += f" calibration prompts recorded in the card ({len(groups)}, never trained on)"
    if halves.half == halves.test_half:
        test_groups = {i.group for i in test_items}
        items = [i for i in items if i.group not in test_groups]
        fitted_on += f" outside the test sample (--test-limit {halves.test_limit})"
    if not items:
        raise typer.BadParameter("no labelled answer left to fit on", param_hint="--half")
    default_dir = Path("runs/policy") / fingerprint
    parts = (
        (items, halves.scores or [default_dir / f"{halves.half}.jsonl"]),
        (test_items, halves.test_scores or [default_dir / f"{halves.test_half}.jsonl"]),
    )
    records = _score_pending(model_dir, parts)
    checked_on = f"{Path(path).name} [{halves.test_half}]" + (f" sample of {limit}" if limit else "")
    described = f"fitted on {fitted_on}; checked on {checked_on}"
    return from_journal(items, records[0]), from_journal(test_items, records[1]), described


def _score_pending(model_dir: Path, parts) -> list[dict[str, dict]]:
    """Score, through one local sidecar of the model, whatever no journal of its part holds yet; the records of
    each part (journals of different halves are never mixed: their ids repeat)."""
    from evaluation.answers import AnswerError, local_sidecar
    from evaluation.labelled import score_with_sidecar
    from selfeval.journal import read_records
    from training.progress import progress_for

    def read_all(journals: list[Path]) -> dict[str, dict]:
        return {r["id"]: r for j in journals if j.exists() for r in read_records(j)}

    pending = [([i for i in items if i.id not in read_all(journals)], journals[0]) for items, journals in parts]
    if any(todo for todo, _ in pending):
        journal = next(j for todo, j in pending if todo)
        try:
            with (
                progress_for(console) as progress,
                local_sidecar(model_dir, journal.with_suffix(".sidecar.log")) as url,
            ):
                for todo, first in pending:
                    if not todo:
                        continue
                    first.parent.mkdir(parents=True, exist_ok=True)
                    progress.start("score", f"/v1/score: {len(todo)} labelled answers -> {first}", len(todo))
                    score_with_sidecar(url, todo, first, 4, lambda: progress.advance("score"))
                    progress.finish("score")
        except AnswerError as exc:
            console.print(f"[red]{exc}[/red] (what was scored is journaled: rerun to resume)")
            raise typer.Exit(2) from None
    return [read_all(journals) for _, journals in parts]


def _from_ledger(fingerprint: str, ledger: str | None, judge: str | None, test_share: float, seed: int):
    from evaluation.policy_fit import from_ledger, in_test_part
    from seecli.calibrate import ledger_verdicts

    judged = from_ledger(ledger_verdicts(fingerprint, ledger, judge))
    test = in_test_part(judged.groups, test_share, seed)
    described = f"ledger verdicts of card {fingerprint} ({judge or 'all judges'}), test share {test_share:g}"
    return judged.subset(~test), judged.subset(test), described
