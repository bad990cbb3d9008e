"""`see` entry point: `see serve`, `see generate`, `see model prepare|card`, `see train`, `see judge`, `see eval`,
`see eval-labels`, `see calibrate fit|show`."""

from __future__ import annotations

from pathlib import Path

import typer

from seecli import calibrate as calibrate_cmd
from seecli import eval_labels as eval_labels_cmd
from seecli import evaluate as eval_cmd
from seecli import generate as generate_cmd
from seecli import model as model_cmd
from seecli import train as train_cmd

app = typer.Typer(help="SEE Sidecar: answers that come with their predicted judge scores.", no_args_is_help=True)
app.add_typer(model_cmd.app, name="model")
app.command("generate")(generate_cmd.generate)
app.command("train")(train_cmd.train)
app.add_typer(train_cmd.judge_app, name="judge")
app.command("eval")(eval_cmd.evaluate)
app.command("eval-compare")(eval_cmd.compare)
app.command("eval-labels")(eval_labels_cmd.eval_labels)
app.add_typer(calibrate_cmd.app, name="calibrate")


@app.command()
def serve(
    model: Path | None = typer.Option(
        None, help="Checkpoint directory with see_card.json (default: the default model)"
    ),
    host: str | None = typer.Option(None, help="Bind address (default 127.0.0.1, env SEE_HOST)"),
    port: int | None = typer.Option(None, help="Port (default 8000, env SEE_PORT)"),
    cache_dir: Path | None = typer.Option(None, help="Where the default model is provisioned (env SEE_CACHE_DIR)"),
    max_model_len: int | None = typer.Option(None, help="Context length (default: the model's, capped at 8192)"),
    engine_url: str | None = typer.Option(
        None, help="Generate on this vLLM server or router, serving the same checkpoint (env SEE_ENGINE_URL)"
    ),
    answer_model: Path | None = typer.Option(
        None,
        help="Split mode: this model (e.g. SmolLM2-135M-Instruct) writes the answers, the checkpoint reads their "
        "scores (env SEE_ANSWER_MODEL)",
    ),
    answer_engine_url: str | None = typer.Option(
        None, help="Split mode with the answers written by this vLLM server (env SEE_ANSWER_ENGINE_URL)"
    ),
) -> None:
    """Serve a model over HTTP (provisions the default model on first use)."""
    from pydantic import ValidationError

    from server.__main__ import serve as run_server
    from server.settings import Settings

    overrides = {"model": model, "host": host, "port": port, "cache_dir": cache_dir, "max_model_len": max_model_len,
                 "engine_url": engine_url, "answer_model": answer_model,
                 "answer_engine_url": answer_engine_url}  # fmt: skip
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None
    raise typer.Exit(run_server(settings))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
