"""`see eval-labels`: one run that scores a human-labelled set with our model and every baseline, then reports.

Sources, each journaled under the output directory (a rerun resumes and never re-asks a server):
  scores_ours.jsonl       the model under test through its sidecar's /v1/score
  scores_untrained.jsonl  the untrained model's readout through its own sidecar (baseline a)
  baselines.jsonl         length (b), mean token log-probability (c) and P(True) (d) from a stock vLLM server
                          on the untrained model
The constant baseline (e) is the train half's label distribution. Only responses every source scored are
compared (skips are counted in the report). Outputs: metrics.json, report.md, reliability.png, roc.png,
scatter.png. The held-out half is only read here, never by training.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from evaluation.answers import local_sidecar
from evaluation.labelled import labelled_items, score_baselines, score_with_sidecar, stock_vllm_server
from evaluation.labelled_metrics import Predictor, constant_distribution, decision_mix, evaluate, goals
from evaluation.labelled_report import write_labelled_report
from selfeval.journal import read_records
from selfeval.jsonfile import write_json_atomic
from selfeval.rubric import ATTRIBUTES
from training.progress import NullProgress, Progress

OURS, UNTRAINED = "see-distilled", "untrained-readout"


@dataclass(frozen=True)
class LabelledSpec:
    model: str  # checkpoint directory of the model under test
    baseline_model: str  # checkpoint directory of the untrained model (readout, log-probability, P(True))
    data: str
    half: str = "eval.json"
    train_half: str = "train.json"  # only for the constant baseline's label distribution
    limit: int | None = None
    concurrency: int = 4
    resamples: int = 1000
    seed: int = 0
    collect: bool = True  # False: report on what the journals already hold (an interrupted or cut-short run)


def _by_id(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in read_records(path)} if path.exists() else {}


def collect(spec: LabelledSpec, out: Path, items, progress: Progress) -> dict[str, float]:
    """Fill the three journals (skipping what is done); returns seconds per source for this run."""
    seconds = {}
    for label, model_dir in ((OURS, spec.model), (UNTRAINED, spec.baseline_model)):
        journal = out / f"scores_{label}.jsonl"
        pending = len(items) - len(_by_id(journal))
        if pending:
            started = time.monotonic()
            progress.start(label, f"/v1/score: {label}", pending)
            with local_sidecar(Path(model_dir), out / f"sidecar_{label}.log") as url:
                score_with_sidecar(url, items, journal, spec.concurrency, lambda lb=label: progress.advance(lb))
            progress.finish(label)
            seconds[label] = round(time.monotonic() - started, 1)
    journal = out / "baselines.jsonl"
    pending = len(items) - len(_by_id(journal))
    if pending:
        started = time.monotonic()
        progress.start("baselines", "baselines: log-probability, P(True)", pending)
        with stock_vllm_server(Path(spec.baseline_model), out / "stock_vllm.log") as url:
            score_baselines(
                url, Path(spec.baseline_model), items, journal, spec.concurrency, lambda: progress.advance("baselines")
            )
        progress.finish("baselines")
        seconds["baselines"] = round(time.monotonic() - started, 1)
    return seconds


def run_labelled_eval(spec: LabelledSpec, out: Path, progress: Progress | None = None) -> dict:
    progress = progress or NullProgress()
    out.mkdir(parents=True, exist_ok=True)
    data = Path(spec.data)
    items = labelled_items(data, spec.half, spec.limit, spec.seed)
    seconds = collect(spec, out, items, progress) if spec.collect else {}
    ours, untrained, base = (
        _by_id(out / f) for f in (f"scores_{OURS}.jsonl", f"scores_{UNTRAINED}.jsonl", "baselines.jsonl")
    )
    kept = [i for i in items if all(i.id in s and "skipped" not in s[i.id] for s in (ours, untrained, base))]
    if len(kept) < 4:
        raise RuntimeError(f"only {len(kept)} responses were scored by every source; nothing to compare")
    human = np.asarray([[i.human[a] for a in ATTRIBUTES] for i in kept], dtype=int)
    train = labelled_items(data, spec.train_half)
    train_human = np.asarray([[i.human[a] for a in ATTRIBUTES] for i in train], dtype=int)
    predictors = [
        Predictor(
            OURS,
            "distribution",
            "the model under test: forced readout via /v1/score",
            probs=np.asarray([ours[i.id]["probs"] for i in kept], float),
        ),
        Predictor(
            UNTRAINED,
            "distribution",
            "(a) the untrained default's forced readout via /v1/score",
            probs=np.asarray([untrained[i.id]["probs"] for i in kept], float),
        ),
        Predictor(
            "length",
            "scalar",
            "(b) response length in tokens",
            values=np.asarray([base[i.id]["length_tokens"] for i in kept], float),
        ),
        Predictor(
            "mean-logprob",
            "scalar",
            "(c) mean token log-probability of the response (untrained model)",
            values=np.asarray([base[i.id]["mean_logprob"] for i in kept], float),
        ),
        Predictor(
            "p-true",
            "scalar",
            "(d) P(Yes) to 'is the response helpful and correct?' (untrained model)",
            values=np.asarray([base[i.id]["p_true"] for i in kept], float),
        ),
        Predictor(
            "constant",
            "constant",
            "(e) the train half's label distribution for every response",
            probs=constant_distribution(train_human, len(kept)),
        ),
    ]
    progress.start("bootstrap", "bootstrap over prompts", spec.resamples)
    metrics = evaluate(
        human,
        np.asarray([i.group for i in kept]),
        predictors,
        OURS,
        spec.resamples,
        spec.seed,
        progress=lambda: progress.advance("bootstrap"),
    )
    progress.finish("bootstrap")
    metrics["decisions"] = {
        name: decision_mix([journal[i.id]["decision"] for i in kept])
        for name, journal in ((OURS, ours), (UNTRAINED, untrained))
    }
    metrics["goals"] = goals(metrics)
    readouts = [i for i in items if all(i.id in s and "skipped" not in s[i.id] for s in (ours, untrained))]
    if len(readouts) > len(kept):  # a cut-short baseline pass: the two readouts on every row both scored too
        metrics["readouts_only"] = evaluate(
            np.asarray([[i.human[a] for a in ATTRIBUTES] for i in readouts], dtype=int),
            np.asarray([i.group for i in readouts]),
            [
                Predictor(OURS, "distribution", "", probs=np.asarray([ours[i.id]["probs"] for i in readouts], float)),
                Predictor(
                    UNTRAINED, "distribution", "", probs=np.asarray([untrained[i.id]["probs"] for i in readouts], float)
                ),
            ],
            OURS,
            spec.resamples,
            spec.seed,
        )
        metrics["readouts_only"]["decisions"] = {
            name: decision_mix([journal[i.id]["decision"] for i in readouts])
            for name, journal in ((OURS, ours), (UNTRAINED, untrained))
        }
    metrics["skipped"] = {
        "responses_in_half": len(items),
        "compared": len(kept),
        "by_source": {
            name: sum(1 for r in journal.values() if "skipped" in r)
            for name, journal in ((OURS, ours), (UNTRAINED, untrained), ("baselines", base))
        },
    }
    metrics["spec"] = asdict(spec) | {
        "model": _shown(spec.model),
        "baseline_model": _shown(spec.baseline_model),
        "data": _shown(spec.data),
    }
    metrics["collection_seconds_this_run"] = seconds
    write_json_atomic(out / "metrics.json", metrics)
    write_labelled_report(out, metrics, human, predictors)
    return metrics


def _shown(path: str) -> str:
    """A path as a report may show it: relative to the directory holding data/ (the checkout) or the current one,
    else under ~, never a user's absolute path."""
    from training.data import data_dir

    resolved = Path(path).resolve()
    for root in (data_dir().resolve().parent, Path.cwd()):
        if resolved.is_relative_to(root):
            return str(resolved.relative_to(root))
    home = str(Path.home())
    return path.replace(home, "~", 1) if path.startswith(home) else path


def load_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))
