"""`see generate "question"`: ask a running sidecar and show the answer with its five score distributions."""

from __future__ import annotations

import httpx
import typer
from rich.console import Console
from rich.table import Table

BARS = " ▁▂▃▄▅▆▇█"


def sparkline(probs: list[float]) -> str:
    peak = max(probs) or 1.0
    return "".join(BARS[round(p / peak * (len(BARS) - 1))] for p in probs)


def generate(
    question: str = typer.Argument(..., help="The user message"),
    url: str = typer.Option("http://127.0.0.1:8000", envvar="SEE_URL", help="Sidecar base URL"),
    max_tokens: int | None = typer.Option(None, help="Answer budget in tokens"),
    temperature: float | None = typer.Option(None, help="Sampling temperature (0 = greedy)"),
    seed: int | None = typer.Option(None, help="Sampling seed"),
    timeout: float = typer.Option(300.0, help="Seconds to wait for the answer"),
) -> None:
    """Print the answer and a table of the five predicted judge-score distributions."""
    console = Console()
    body = {"prompt": question, "max_tokens": max_tokens, "temperature": temperature, "seed": seed}
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/generate", json={k: v for k, v in body.items() if v is not None}, timeout=timeout
        )
    except httpx.HTTPError as exc:
        console.print(f"[red]error:[/red] cannot reach the sidecar at {url} ({exc}); start it with `see serve`")
        raise typer.Exit(1) from None
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        console.print(f"[red]error {response.status_code}:[/red] {message}")
        raise typer.Exit(1)
    result = response.json()
    console.print(result["answer"], markup=False, highlight=False)
    evaluation = result.get("self_evaluation") or {}
    if not evaluation.get("scores"):
        console.print(f"[yellow]no self-evaluation:[/yellow] {evaluation.get('reason')}")
        return
    table = Table(title=f"predicted judge scores (0-9), readout: {evaluation['source']}")
    for column in ("attribute", "expected", "argmax", "std", "entropy", "label mass", "P(0..9)"):
        table.add_column(column, justify="left" if column in ("attribute", "P(0..9)") else "right")
    for attribute, score in evaluation["scores"].items():
        table.add_row(
            attribute,
            f"{score['expected']:.2f}",
            str(score["argmax"]),
            f"{score['std']:.2f}",
            f"{score['entropy']:.2f}",
            f"{score['label_mass']:.3f}",
            sparkline(score["probs"]),
        )
    console.print(table)
    console.print(f"predicted quality: {evaluation['predicted_quality']:.3f}")
