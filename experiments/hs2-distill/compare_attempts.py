"""Two distilled readouts of the same held-out responses, side by side, with paired bootstrap differences.

    python experiments/hs2-distill/compare_attempts.py NEW_SCORES.jsonl OLD_SCORES.jsonl [--out FILE.json]

Both journals are `see eval-labels` outputs (`scores_see-distilled.jsonl`) on the held-out half. Only responses
scored in both are compared; the bootstrap resamples whole prompts, the same draws for both readouts, so the
difference (new - old) carries its own 95 % interval (evaluation.labelled_metrics). Nothing here is fitted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from evaluation.labelled import labelled_items
from evaluation.labelled_metrics import TARGETS, Predictor, evaluate
from selfeval.journal import read_records
from selfeval.rubric import ATTRIBUTES
from training.data import default_dataset

METRICS = ("spearman", "auroc_bad", "mae", "top5")


def journal(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in read_records(path) if "skipped" not in r}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new", type=Path)
    parser.add_argument("old", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    new, old = journal(args.new), journal(args.old)
    items = [i for i in labelled_items(default_dataset(), "eval.json") if i.id in new and i.id in old]
    human = np.asarray([[i.human[a] for a in ATTRIBUTES] for i in items], dtype=int)
    predictors = [
        Predictor(name, "distribution", str(path), probs=np.asarray([scores[i.id]["probs"] for i in items], float))
        for name, path, scores in (("new", args.new, new), ("old", args.old, old))
    ]
    metrics = evaluate(human, np.asarray([i.group for i in items]), predictors, "new", args.resamples)
    print(f"{metrics['n_responses']} responses, {metrics['n_prompts']} prompts; new - old, 95% CI over prompts")
    for target in TARGETS:
        cells = []
        for metric in METRICS:
            row = metrics["targets"][target]
            if metric not in row["new"]:
                continue
            diff = metrics["paired_vs_baselines"][target]["old"][metric]
            cells.append(
                f"{metric} {row['new'][metric]['value']:.3f} vs {row['old'][metric]['value']:.3f} "
                f"({diff['value']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}])"
            )
        print(f"{target:12s} " + "; ".join(cells))
    if args.out:
        args.out.write_text(json.dumps(metrics, indent=1) + "\n")


if __name__ == "__main__":
    main()
