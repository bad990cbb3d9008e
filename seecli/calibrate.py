"""`see calibrate fit|show`: fit a post-hoc calibration map from ledger feedback, check it, write it beside the card.

`fit` reads the verdicts the ledger holds for the checkpoint's card (optionally of one judge), fits the map
on (1 - holdout) of them, measures digit ECE, MAE and NLL before and after on the held-out rest, prints
that table and writes `see_calibration.json` (the held-out numbers inside it). It refuses to write a map
that makes held-out ECE worse on average (unless --force). A running server picks the map up at restart.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from seecli.calibrate_policy import policy

app = typer.Typer(help="Post-hoc calibration of the self-scores against judge feedback.", no_args_is_help=True)
app.command("policy")(policy)
console = Console()


def default_ledger() -> str:
    from server.settings import default_ledger_url

    return os.environ.get("SEE_LEDGER__URL") or default_ledger_url()


def ledger_verdicts(fingerprint: str, ledger: str | None, judge: str | None) -> list:
    """Every verdict the ledger holds for the card (optionally of one judge), oldest first; exit 2 if unreachable."""
    from server.calibration.ledger import Ledger, LedgerError

    try:
        store = Ledger(ledger or default_ledger())
    except LedgerError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    try:
        return store.call(Ledger.scored_pairs(card_fingerprint=fingerprint, judge=judge, newest=False), timeout=600)
    finally:
        store.close()


def heldout_table(heldout: dict) -> Table:
    table = Table(title="held-out feedback: before -> after")
    for column in ("attribute", "ECE", "MAE", "NLL"):
        table.add_column(column, justify="left" if column == "attribute" else "right")
    for attribute, values in heldout.items():
        before, after = values["before"], values["after"]
        cells = [f"{before[m]:.3f} -> {after[m]:.3f}" for m in ("ece", "mae", "nll")]
        table.add_row(attribute, *cells)
    return table


def mean_of(heldout: dict, when: str, metric: str) -> float:
    return sum(v[when][metric] for v in heldout.values()) / len(heldout)


@app.command()
def fit(
    model: Path = typer.Option(..., help="Checkpoint directory (see_card.json); the map is written there"),
    ledger: str = typer.Option(None, help="Ledger path or postgresql:// DSN (default: $SEE_LEDGER__URL or ~/.local)"),
    judge: str | None = typer.Option(None, help="Use only this judge's verdicts (default: every judge)"),
    method: str = typer.Option("vector", help="vector (slope + per-score biases) or temperature (slope only)"),
    holdout: float = typer.Option(0.3, min=0.05, max=0.9, help="Share of verdicts kept aside for the check"),
    min_feedback: int = typer.Option(100, min=10, help="Refuse to fit on fewer verdicts"),
    l2: float = typer.Option(1.0, min=0.0, help="Pull towards the identity map (regularisation)"),
    seed: int = typer.Option(0, help="Seed of the fit/held-out split"),
    out: Path | None = typer.Option(None, help="Write here instead of MODEL/see_calibration.json"),
    force: bool = typer.Option(False, help="Write the map even if held-out ECE gets worse"),
) -> None:
    """Fit a calibration map for MODEL from the ledger's judge feedback."""
    from evaluation.recalibration import fit_map
    from selfeval.calibration import METHODS, calibration_path, card_fingerprint, write_calibration
    from selfeval.card import CardError, load_card

    if method not in METHODS:
        raise typer.BadParameter(f"method must be one of {list(METHODS)}", param_hint="--method")
    try:
        card = load_card(model)
    except CardError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from None
    fingerprint = card_fingerprint(card)
    pairs = ledger_verdicts(fingerprint, ledger, judge)
    who = f"judge {judge!r}" if judge else "all judges"
    if len(pairs) < min_feedback:
        console.print(
            f"[red]{len(pairs)} verdicts for card {fingerprint} ({card.model_name}, {who}) in the ledger; "
            f"need at least {min_feedback} (--min-feedback)[/red]"
        )
        raise typer.Exit(1)
    fitted = fit_map(
        pairs, method=method, card_fingerprint=fingerprint, model_name=card.model_name, judge=judge,
        holdout=holdout, seed=seed, l2=l2,
    )  # fmt: skip
    console.print(f"{method} map fitted on {fitted.fitted_on} verdicts, checked on {fitted.evaluated_on} ({who})")
    console.print(heldout_table(fitted.heldout_metrics))
    before, after = mean_of(fitted.heldout_metrics, "before", "ece"), mean_of(fitted.heldout_metrics, "after", "ece")
    console.print(f"mean held-out ECE {before:.3f} -> {after:.3f}")
    if after > before and not force:
        console.print("[red]the map makes held-out ECE worse; not written (--force to write it anyway)[/red]")
        raise typer.Exit(1)
    path = write_calibration(out or calibration_path(model), fitted)
    console.print(f"wrote {path} (version {fitted.version}); restart the server to serve calibrated scores")


@app.command()
def show(path: Path = typer.Argument(..., help="A checkpoint directory or a see_calibration.json file")) -> None:
    """Print a calibration map's provenance and held-out check."""
    from selfeval.calibration import CalibrationError, calibration_path, load_calibration

    file = calibration_path(path) if path.is_dir() else path
    try:
        calibration = load_calibration(file)
    except CalibrationError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"{calibration.version}: {calibration.method} for {calibration.model_name} (card "
        f"{calibration.card_fingerprint}), fitted {calibration.created_at} on {calibration.fitted_on} verdicts "
        f"({calibration.judge or 'all judges'}), checked on {calibration.evaluated_on}"
    )
    if calibration.heldout_metrics:
        console.print(heldout_table(calibration.heldout_metrics))
