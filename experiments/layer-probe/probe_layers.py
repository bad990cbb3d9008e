"""Where in the model does the signal about human labels live? A diagnostic on the TRAIN half only.

Issue 15's levers left all change the representations the readout reads (training deeper, a larger model). This
measures, before paying for one, how much of each human label a linear read of every layer's hidden state
recovers: for each layer, a ridge probe on (a) the state at the position that predicts the helpfulness digit
(exactly what the readout's first step sees: prompt, answer and the block up to `"helpfulness": `; no label digit
is in view there) and (b) the mean of the answer's token states. Scored by 5-fold cross-validation over prompts
(both responses of a prompt in the same fold; the ridge strength picked by an inner 4-fold split of each outer
training part), out-of-fold Spearman with the human label, 95 % interval over prompts. The held-out half
(`eval.json`) is never read: the rows are a labels-distill run's `rows.jsonl`, built from the train half.

Usage (after `see train --config hs2-distill`, which writes rows.jsonl; ~23 min of CPU for 996 rows on 2 cores):
  python experiments/layer-probe/probe_layers.py runs/hs2-distill/rows.jsonl --model default-untrained \
      --out experiments/layer-probe/smollm2-135m.json --cache runs/layer-probe/smollm2-135m.npz
Hidden states (~140 MB for 996 rows) are cached in --cache (default: beside --out; keep it under the gitignored
runs/) so a second run only refits. `--model` takes a checkpoint directory or `default-untrained` / `default`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from evaluation.metrics import Bootstrap, spearman
from selfeval.rubric import ATTRIBUTES

ALPHAS = (1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0)
OUTER_FOLDS, INNER_FOLDS = 5, 4


def model_dir(name: str) -> Path:
    if name in ("default", "default-untrained"):
        from selfeval.models import prepare_base_model, prepare_default_model

        prepare = prepare_default_model if name == "default" else prepare_base_model
        return prepare(report=lambda _: None)
    return Path(name)


def answer_start(rows: list[dict]) -> list[int]:
    """Where each row's answer begins: the end of the prompt both responses of its prompt share (the longest
    common prefix of the two rows, a token or two long when the answers open alike; a prompt with one row
    left takes its partner's length when known, else the row's own block start)."""
    by_group = defaultdict(list)
    for row in rows:
        by_group[row["group"]].append(row["ids"])
    start = {}
    for group, ids in by_group.items():
        if len(ids) == 2:
            a, b = ids
            start[group] = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return [start.get(row["group"], row["positions"][0] - 8) for row in rows]


def hidden_states(directory: Path, rows: list[dict], cache: Path) -> dict[str, np.ndarray]:
    """[rows, layers + 1, hidden] float32 for the digit-predicting position and for the answer's mean."""
    if cache.exists():
        with np.load(cache) as saved:
            if saved["rows"] == len(rows):
                return {"last": saved["last"], "mean": saved["mean"]}
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    starts = answer_start(rows)
    last, mean = [], []
    began = time.monotonic()
    for index, (row, start) in enumerate(zip(rows, starts, strict=True)):
        query = row["positions"][0] - 1  # its logits are the helpfulness digit's distribution
        ids = torch.tensor([row["ids"][: query + 1]])
        with torch.inference_mode():
            states = model(ids, output_hidden_states=True).hidden_states
        stacked = torch.stack([s[0] for s in states])  # [layers + 1, tokens, hidden]
        last.append(stacked[:, query].clone().numpy())  # a copy: a view would keep every token's states alive
        mean.append(stacked[:, start : query + 1].mean(dim=1).numpy())
        del states, stacked
        if (index + 1) % 50 == 0:
            rate = (time.monotonic() - began) / (index + 1)
            left = rate * (len(rows) - index - 1) / 60
            print(f"  {index + 1}/{len(rows)} rows, {rate:.2f} s a row, ~{left:.0f} min left")
    result = {"last": np.stack(last), "mean": np.stack(mean)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, rows=len(rows), **result)
    return result


def folds(groups: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A fold number per row; every row of a prompt in the same fold."""
    unique = np.unique(groups)
    assignment = dict(zip(np.random.default_rng(seed).permutation(unique), np.arange(len(unique)) % count, strict=True))
    return np.array([assignment[g] for g in groups])


def ridge_predict(train_x, train_y, test_x, alphas) -> dict[float, np.ndarray]:
    """Ridge on standardised features (statistics of the training part), every strength from one SVD."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    y_mean = train_y.mean(0)
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    uty = u.T @ (train_y - y_mean)
    return {alpha: b @ (vt.T @ ((s / (s * s + alpha))[:, None] * uty)) + y_mean for alpha in alphas}


def out_of_fold(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Nested CV predictions: each outer fold's strength chosen per target by the inner folds' squared error."""
    outer = folds(groups, OUTER_FOLDS, seed=0)
    predictions = np.zeros_like(y)
    for k in range(OUTER_FOLDS):
        train, test = outer != k, outer == k
        inner = folds(groups[train], INNER_FOLDS, seed=k + 1)
        error = {alpha: np.zeros(y.shape[1]) for alpha in ALPHAS}
        for j in range(INNER_FOLDS):
            fit, check = inner != j, inner == j
            for alpha, p in ridge_predict(x[train][fit], y[train][fit], x[train][check], ALPHAS).items():
                error[alpha] += ((p - y[train][check]) ** 2).sum(0)
        best = [min(ALPHAS, key=lambda alpha, t=t: error[alpha][t]) for t in range(y.shape[1])]
        fitted = ridge_predict(x[train], y[train], x[test], ALPHAS)
        for t, alpha in enumerate(best):
            predictions[test, t] = fitted[alpha][:, t]
    return predictions


def by_prompt_interval(pred: np.ndarray, truth: np.ndarray, groups: np.ndarray) -> dict:
    """Spearman with a 95 % bootstrap interval over prompts (both responses of a prompt drawn together)."""
    unique = np.unique(groups)
    members = [np.flatnonzero(groups == g) for g in unique]

    def statistic(picked: np.ndarray) -> float | None:
        rows = np.concatenate([members[i] for i in picked])
        return spearman(pred[rows], truth[rows])

    result = Bootstrap(resamples=500).statistic(len(unique), statistic)
    return {key: None if value is None else round(value, 3) for key, value in result.items()}


def plot(report: dict, path: Path) -> None:
    """Out-of-fold Spearman by layer, one panel per attribute, both reads, with the length baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(ATTRIBUTES), figsize=(4 * len(ATTRIBUTES), 3.4), sharey=True)
    layers = sorted({int(key.split("/")[1]) for key in report["layers"]})
    for axis, attribute in zip(axes, ATTRIBUTES, strict=True):
        for pool, label in (("last", "state at the digit position"), ("mean", "mean over the answer")):
            cells = [report["layers"][f"{pool}/{layer}"][attribute] for layer in layers]
            axis.plot(layers, [c["value"] for c in cells], label=label)
            axis.fill_between(layers, [c["low"] for c in cells], [c["high"] for c in cells], alpha=0.2)
        axis.axhline(report["length_baseline"][attribute]["value"], color="grey", linestyle=":", label="answer length")
        axis.set_title(attribute)
        axis.set_xlabel("layer (0 = embeddings)")
    axes[0].set_ylabel("out-of-fold Spearman (train half)")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=Path, help="a labels-distill run's rows.jsonl (train half)")
    parser.add_argument("--model", default="default-untrained")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, help="hidden-state cache (.npz); default: beside --out")
    parser.add_argument("--limit", type=int, help="first N rows only (a quick look)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.rows.read_text(encoding="utf-8").split("\n") if line.strip()]
    rows = rows[: args.limit] if args.limit else rows
    directory = model_dir(args.model)
    cache = args.cache or args.out.with_suffix(".npz")
    began = time.monotonic()
    states = hidden_states(directory, rows, cache)
    forward_s = time.monotonic() - began
    groups = np.array([row["group"] for row in rows])
    labels = np.array([[row["scores"][a] for a in ATTRIBUTES] for row in rows], dtype=float)
    answer_tokens = np.array(
        [row["positions"][0] - s for row, s in zip(rows, answer_start(rows), strict=True)], dtype=float
    )
    report = {
        "model": args.model,
        "rows": len(rows),
        "prompts": int(len(np.unique(groups))),
        "forward_seconds": round(forward_s, 1),
        "cv": f"{OUTER_FOLDS}-fold over prompts, ridge strength by inner {INNER_FOLDS}-fold, alphas {list(ALPHAS)}",
        "length_baseline": {
            a: by_prompt_interval(answer_tokens, labels[:, t], groups) for t, a in enumerate(ATTRIBUTES)
        },
        "layers": {},
    }
    layers = states["last"].shape[1]
    for pool in ("last", "mean"):
        for layer in range(layers):
            predictions = out_of_fold(states[pool][:, layer, :].astype(np.float64), labels, groups)
            report["layers"][f"{pool}/{layer}"] = {
                a: by_prompt_interval(predictions[:, t], labels[:, t], groups) for t, a in enumerate(ATTRIBUTES)
            }
            helpful = report["layers"][f"{pool}/{layer}"]["helpfulness"]
            print(
                f"{pool:>4} layer {layer:2d}: helpfulness {helpful['value']:+.3f} [{helpful['low']}, {helpful['high']}]"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    plot(report, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
