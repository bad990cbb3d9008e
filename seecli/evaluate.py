"""`see eval` (one evaluation run, resumable; re-judging another run's answers) and `see eval-compare`."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def _judge_model(base_url: str, given: str | None) -> str:
    """The judge model name: as given, else the single model the endpoint lists."""
    if given:
        return given
    import httpx

    try:
        listed = [m["id"] for m in httpx.get(base_url.rstrip("/") + "/models", timeout=10).json()["data"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise typer.BadParameter(f"could not list the judge's models ({exc}); pass --judge-model") from None
    if len(listed) != 1:
        raise typer.BadParameter(f"the judge serves {len(listed)} models {listed[:5]}; pick one with --judge-model")
    return listed[0]


def _default_out(prompts: str, model: str | None, answers_from: Path | None, judge_model: str) -> Path:
    source = answers_from.name if answers_from else Path(model.rstrip("/")).name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{Path(prompts).stem}-{source}-{judge_model}").strip("-")
    return Path("runs") / "eval" / slug


def summary_table(metrics: dict) -> Table:
    from evaluation.report import HEADLINE, fmt

    table = Table(title=f"{metrics['run']['label']} on {metrics['run']['prompts']} ({metrics['examples']} judged)")
    table.add_column("metric")
    table.add_column("value [95% CI]", justify="right")
    for key, label in HEADLINE[:6]:
        table.add_row(label, fmt(metrics.get(key)))
    table.add_row("judge digit in top-5 (digits)", fmt(metrics["topk"]["top5_digits"]))
    for key, stat in (metrics.get("vs_baseline") or {}).items():
        if isinstance(stat, dict) and "value" in stat:
            table.add_row(f"vs baseline: {key}", fmt(stat))
    return table


def evaluate(
    model: str | None = typer.Option(None, help="Checkpoint DIR (started here) or a running sidecar URL"),
    answers_from: Path | None = typer.Option(None, help="Re-judge the answers of this run directory (cross-judge)"),
    prompts: str = typer.Option(
        "helpsteer2-heldout", help="helpsteer2-heldout | mt-bench | arena-hard-v2 | alpacaeval | FILE.jsonl"
    ),
    judge: str = typer.Option(..., help="Judge: OpenAI-compatible base URL, e.g. http://127.0.0.1:8100/v1"),
    judge_model: str | None = typer.Option(None, help="Judge model name (default: the one model the judge lists)"),
    judge_api_key_env: str = typer.Option("OPENAI_API_KEY", help="Env variable holding the judge's API key"),
    judge_concurrency: int = typer.Option(24, help="Judge calls in flight"),
    judge_temperature: str = typer.Option("0.1", help="Judge temperature, or 'none' to send none"),
    judge_token_param: str = typer.Option("max_tokens", help="max_tokens | max_completion_tokens | '' (none)"),
    baseline: Path | None = typer.Option(None, help="Run directory to compare against (win rates, pairwise)"),
    pairwise: bool = typer.Option(True, help="With --baseline: judge both answers side by side, in both orders"),
    limit: int | None = typer.Option(None, help="Only the first N prompts of the set"),
    out: Path | None = typer.Option(None, help="Run directory (default runs/eval/<set>-<model>-<judge>); resumes"),
    label: str | None = typer.Option(None, help="Name of this model in reports (default: the served model name)"),
    max_tokens: int = typer.Option(256, help="Answer budget in tokens"),
    temperature: float = typer.Option(0.0, help="Answer sampling temperature (0 = greedy)"),
    seed: int = typer.Option(0, help="Sampling seed"),
    concurrency: int = typer.Option(4, help="Sidecar requests in flight"),
    data_dir: Path | None = typer.Option(None, help="Folder with prompt sets that are not shipped (alpacaeval)"),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples for the 95% intervals"),
    max_model_len: int | None = typer.Option(None, help="Context length of a sidecar started here"),
) -> None:
    """Evaluate self-score calibration: answers with self-evaluations, the judge's scores, metrics, report, plots."""
    from evaluation.answers import AnswerError, AnswerSettings
    from evaluation.prompt_sets import PromptSetError
    from evaluation.run import EvalError, EvalSpec, run_eval
    from selfeval.judge import JudgeSettings
    from training.progress import progress_for

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        judge_settings = JudgeSettings(
            base_url=judge,
            model=_judge_model(judge, judge_model),
            api_key_env=judge_api_key_env,
            temperature=None if judge_temperature.lower() == "none" else float(judge_temperature),
            token_limit_param=judge_token_param,
            concurrency=judge_concurrency,
        )
        spec = EvalSpec(
            prompts=prompts,
            judge=judge_settings,
            model=model,
            answers_from=str(answers_from) if answers_from else None,
            label=label,
            limit=limit,
            data_dir=str(data_dir) if data_dir else None,
            answers=AnswerSettings(max_tokens=max_tokens, temperature=temperature, seed=seed, concurrency=concurrency),
            baseline=str(baseline) if baseline else None,
            pairwise=pairwise,
            bootstrap=bootstrap,
            max_model_len=max_model_len,
        )
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    directory = out or _default_out(prompts, model, answers_from, judge_settings.model)
    console.print(f"evaluation run directory {directory}")
    try:
        with progress_for(console) as progress:
            metrics = run_eval(spec, directory, progress)
    except (PromptSetError, EvalError, AnswerError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(summary_table(metrics))
    console.print(f"report: {directory / 'report.md'}")


def compare(
    runs: list[Path] = typer.Argument(..., help="Evaluation run directories"),
    out: Path = typer.Option(Path("runs/eval/comparison"), help="Where comparison.md/json go"),
    paper: bool = typer.Option(True, help="Add the paper's numbers in their own columns"),
) -> None:
    """Side-by-side table of several evaluation runs (+ the paper's numbers) and the cross-judge ranking check."""
    from evaluation.report import write_comparison

    try:
        path = write_comparison(runs, out, paper)
    except FileNotFoundError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    typer.echo(path.read_text())
