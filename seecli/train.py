"""`see train` (the SEE cycle, resumable) and `see judge rule-based` (the deterministic loopback judge)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)
judge_app = typer.Typer(help="Judges for training and evaluation.", no_args_is_help=True)


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def cycle_table(manifests: list[dict]) -> Table:
    table = Table(title="SEE cycles")
    for column in ("cycle", "reward", "quality", "calibration", "MAE", "format rate", "judge calls", "cache hits"):
        table.add_column(column, justify="right")
    table.add_column("SFT rows / loss", justify="right")
    for manifest in manifests:
        phases = manifest["phases"]
        summary = phases["rl"]["summary"]
        calls = sum(phases[p]["judge"]["judged"] for p in ("rl", "sft_data"))
        hits = sum(phases[p]["judge"]["cache_hits"] for p in ("rl", "sft_data"))
        sft = phases["sft"]["metrics"]
        table.add_row(
            str(manifest["cycle"]),
            _fmt(summary["reward"]),
            _fmt(summary["quality"]),
            _fmt(summary["calibration"]),
            _fmt(summary["mae"], 2),
            _fmt(summary["format_rate"], 2),
            str(calls),
            str(hits),
            f"{sft['examples']} / {sft['mean_loss']:.3f}",
        )
    return table


def distill_table(manifest: dict) -> Table:
    """Per-epoch validation numbers of a labels-distill run (prompts kept out of training)."""
    table = Table(title="labels-distill: validation prompts of the training half (teacher-forced)")
    for column in ("epoch", "train loss", "val loss", "val MAE (expected) per attribute"):
        table.add_column(column)
    for entry in manifest["phases"]["sft"]["history"]:
        val = entry.get("validation") or {}
        mae = " ".join(f"{v:.2f}" for v in (val.get("mae_expected") or {}).values())
        table.add_row(str(entry["epoch"]), _fmt(entry.get("train_loss")), _fmt(val.get("loss")), mae or "-")
    return table


def train(
    config: str = typer.Option("cpu-smoke", "--config", "-c", help="Preset name or YAML file"),
    overrides: list[str] = typer.Option([], "--set", help="Override a key: --set rl.steps=4 (repeatable)"),
    run_dir: Path | None = typer.Option(None, help="Run directory (default runs/<run.name>); reopening resumes it"),
    show_config: bool = typer.Option(False, help="Print the resolved config and exit"),
) -> None:
    """Train a SEE checkpoint: cycles of GRPO with the judge in the reward, then masked judge distillation."""
    from selfeval.card import CardError
    from selfeval.delta import DeltaError
    from selfeval.judge import JudgeError
    from training.config import ConfigError, dump_config, load_config
    from training.data import DataError
    from training.distill import DistillError
    from training.loop import TrainingError, prepare_run, run_training
    from training.progress import NullProgress, progress_for
    from training.ranks import launched_rank

    try:
        cfg = load_config(config, overrides)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if show_config:
        typer.echo(dump_config(cfg))
        return
    directory = run_dir or Path("runs") / cfg.run.name
    main = launched_rank() == 0  # under accelerate/torchrun only rank 0 draws bars and tables
    logging.basicConfig(
        level=logging.INFO if main else logging.WARNING,
        format=f"%(asctime)s %(levelname)s rank{launched_rank()} %(name)s: %(message)s",
    )
    for noisy in ("httpx", "transformers", "trl", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    done: list[dict] = []
    started = time.monotonic()
    try:
        with progress_for(console) if main else NullProgress() as progress:
            ctx = prepare_run(cfg, directory, progress)
            if main:
                console.print(
                    f"run directory {directory} (prompt mode {ctx.prompt_mode}, {'GPU' if ctx.on_gpu else 'CPU'}, "
                    f"{ctx.ranks.count} process{'es' if ctx.ranks.count > 1 else ''})"
                )
            if cfg.run.mode == "labels-distill":
                from training.labels_distill import run_labels_distill

                manifest = run_labels_distill(ctx)
            else:
                manifest = run_training(ctx, on_cycle_done=done.append)
    except (ConfigError, DataError, CardError, DeltaError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except (TrainingError, DistillError, JudgeError) as exc:
        console.print(f"[red]error:[/red] {exc}\nCompleted phases are kept: run the same command again to resume.")
        raise typer.Exit(1) from None
    if not main:
        return
    if cfg.run.mode == "labels-distill":
        console.print(distill_table(manifest))
    else:
        console.print(cycle_table(done))
    console.print(
        f"final checkpoint: {manifest['final_model']}  ({time.monotonic() - started:.0f} s)\n"
        f"serve it: see serve --model {manifest['final_model']}"
    )


@judge_app.command("rule-based")
def rule_based(
    host: str = typer.Option("127.0.0.1", help="Bind address"),
    port: int = typer.Option(8100, help="Port"),
    latency_s: float = typer.Option(0.0, help="Added latency per request (benchmarks)"),
    variant: str = typer.Option("rule-based-judge-v1", help="rule-based-judge-v1 or rule-based-judge-v1-strict"),
) -> None:
    """Serve the deterministic rule-based judge (OpenAI chat API) for CPU runs and tests; not a quality judge."""
    import uvicorn

    from training.testing.rule_judge import create_app

    try:
        app = create_app(latency_s=latency_s, model=variant)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    uvicorn.run(app, host=host, port=port, log_level="warning")
