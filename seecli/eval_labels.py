"""`see eval-labels`: score a human-labelled set's existing responses with a model and the cheap baselines."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def checkpoint_dir(value: str) -> Path:
    """A checkpoint directory, or a provisioned model's name (the default or the untrained base)."""
    from selfeval.models import NAMED_MODELS, prepare_named_model

    if value in NAMED_MODELS:
        return prepare_named_model(value, report=lambda message: None)
    path = Path(value).expanduser()
    if not (path / "see_card.json").is_file():
        raise typer.BadParameter(f"{value} is neither a checkpoint with see_card.json nor one of {list(NAMED_MODELS)}")
    return path


def summary_table(metrics: dict) -> Table:
    table = Table(title=f"Spearman vs human labels ({metrics['n_responses']} responses; 95% CI over prompts)")
    table.add_column("target")
    for name in metrics["predictors"]:
        table.add_column(name)
    for target, rows in metrics["targets"].items():
        cells = []
        for name in metrics["predictors"]:
            stat = rows[name].get("spearman") or {}
            cells.append("n/a" if stat.get("value") is None else f"{stat['value']:.3f}")
        table.add_row(target, *cells)
    return table


def eval_labels(
    model: str = typer.Option("SmolLM2-135M-Instruct-hs2-distill", help="Checkpoint DIR or model name under test"),
    baseline_model: str = typer.Option(
        "SmolLM2-135M-Instruct", help="The untrained model: readout, log-probability and P(True) baselines"
    ),
    data: Path | None = typer.Option(None, help="Labelled HelpSteer2 jsonl(.gz) (default: the shipped subset)"),
    half: str = typer.Option("eval.json", help="Which half of the subset to score (kitware_file); never train on it"),
    limit: int | None = typer.Option(
        None, help="Only about N responses: a seeded random sample of whole prompts (default: the whole half)"
    ),
    out: Path = typer.Option(Path("runs/eval-labels"), help="Output directory; an interrupted run resumes"),
    concurrency: int = typer.Option(4, help="Requests in flight per server"),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples (over prompts) for the 95% intervals"),
    report_only: bool = typer.Option(
        False, help="Start no server: report on the responses every source has already scored (a cut-short run)"
    ),
) -> None:
    """Self-scores vs human labels next to the baselines, in one run: metrics.json, report.md, plots."""
    from evaluation.answers import AnswerError
    from evaluation.labelled import LabelledEvalError
    from evaluation.labelled_run import LabelledSpec, run_labelled_eval
    from selfeval.models import ProvisionError
    from training.data import DataError, default_dataset
    from training.progress import progress_for

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        spec = LabelledSpec(
            model=str(checkpoint_dir(model)),
            baseline_model=str(checkpoint_dir(baseline_model)),
            data=str(data or default_dataset()),
            half=half,
            limit=limit,
            concurrency=concurrency,
            resamples=bootstrap,
            collect=not report_only,
        )
        with progress_for(console) as progress:
            metrics = run_labelled_eval(spec, out, progress)
    except (ProvisionError, DataError, AnswerError, LabelledEvalError) as exc:
        console.print(f"[red]error:[/red] {exc}\nScores already journaled are kept: run the same command to resume.")
        raise typer.Exit(1) from None
    console.print(summary_table(metrics))
    console.print(f"report: {out / 'report.md'}")
