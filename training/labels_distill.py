"""Off-policy masked distillation on human labels (`run.mode: labels-distill`, the `hs2-distill` preset).

The model learns to predict the human labels of a judged set. A row is a labelled (conversation, response) pair
of the configured half of the data, scored by the labels judge; the response is the answer and the canonical
block follows with the human digits; the loss is on the five digit tokens only (docs/method.md §5.2). Choices:
- Rows use the token layout of the server's forced readout (`selfeval.block.forced_token_layout`): what trains
  is exactly the readout `/v1/score` serves. Rows over `sft.max_length` tokens are left out and counted, never
  truncated (a cut answer is not the answer the humans judged).
- Only the top `sft.trainable_top_layers` decoder layers and the final norm train. The layers below are
  frozen, so their output is computed once per row and cached (features phase) and every epoch runs only the
  top layers: the same loss and gradients as the whole model, at a fraction of the CPU time.
- Targets: the human digit, or with `sft.target_sigma` > 0 a discretised Gaussian around it on 0-9 (human
  labels are coarse, 0-4 doubled, and noisy; a point target teaches the odd digits to be impossible).
- A seeded `sft.validation_fraction` of the prompts is kept out of training and only reported (model
  selection). A seeded `sft.calibration_fraction` of the other prompts is kept out of both and recorded in
  the card (`calibration_groups`): `see calibrate policy` fits the decision thresholds there, so neither the
  trained rows (whose scores are optimistic) nor the held-out half fit anything. No other split of the data
  is read here; the held-out half is never touched.
- Phases (rows, features, sft, export) are recorded in run_manifest.json once complete and skipped on resume;
  features are written in shards and sft saves its state after every epoch, so a killed run loses at most one
  shard or one epoch. Label lookups are free and counted.
Output: delta/delta.safetensors (float16 trained - base, `selfeval.delta`) with delta.json, and final/ = base +
delta with its card (lineage: base, data and delta sha256, resolved config, metrics).
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

from selfeval.block import answer_before_block, forced_token_layout
from selfeval.card import Lineage, ModelCard, digit_token_ids_for, load_card
from selfeval.delta import WEIGHTS_FILE, build_from_delta, export_delta, sha256_of
from selfeval.journal import read_records, rewrite_records
from selfeval.jsonfile import write_json_atomic
from selfeval.prompts import render_prompt
from selfeval.rubric import ATTRIBUTES, SCALE_MAX
from training.config import dump_config
from training.labels_judge import LabelsJudge
from training.loop import TrainingError, _read_json
from training.memory import release_memory
from training.records import DeltaExportResult, DistillSftResult, FeaturesResult, LabelRowsResult
from training.run_context import RunContext
from training.testing.faults import kill_point

SHARD_ROWS = 32


def run_labels_distill(ctx: RunContext) -> dict:
    """Run (or resume) the phases; returns the run manifest (final model, per-phase records, wall time)."""
    if ctx.ranks.count > 1:
        raise TrainingError("run.mode labels-distill runs in one process (its cached features are per process)")
    manifest_path = ctx.run_dir / "run_manifest.json"
    manifest = _read_json(manifest_path) or {"mode": "labels-distill", "base_model": str(ctx.base_model), "phases": {}}
    for name in PHASES:
        if name in manifest["phases"]:
            continue
        started = time.monotonic()
        result = _run_phase(ctx, name, manifest["phases"])
        release_memory()
        manifest["phases"][name] = result.to_dict() | {"seconds": round(time.monotonic() - started, 1)}
        write_json_atomic(manifest_path, manifest)
        kill_point(f"labels.{name}")
    manifest["final_model"] = str(ctx.run_dir / "final")
    manifest["phase_seconds_total"] = round(sum(p["seconds"] for p in manifest["phases"].values()), 1)
    write_json_atomic(manifest_path, manifest)
    return manifest


PHASES = ("rows", "features", "sft", "export")


def _run_phase(ctx: RunContext, name: str, phases: dict):
    """Run one phase on the recorded results of the phases before it (the manifest's JSON, typed again)."""
    if name == "rows":
        return rows_phase(ctx)
    if name == "features":
        return features_phase(ctx)
    features = FeaturesResult.from_dict(phases["features"])
    if name == "sft":
        return sft_phase(ctx, features)
    return export(ctx, LabelRowsResult.from_dict(phases["rows"]), DistillSftResult.from_dict(phases["sft"]))


def _tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def rows_phase(ctx: RunContext) -> LabelRowsResult:
    """Every labelled pair of the configured half -> token ids, digit positions, human scores, split."""
    config = ctx.config
    judge = LabelsJudge.from_file(config.data_path(), config.data.kitware_file)
    tokenizer = _tokenizer(ctx.base_model)
    digits = digit_token_ids_for(tokenizer)

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    def template(messages):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    groups = sorted({pair.group_index for pair in judge})
    held = set(random.Random(config.run.seed).sample(groups, round(len(groups) * config.sft.validation_fraction)))
    rest = [g for g in groups if g not in held]  # drawn second, so the validation prompts do not move
    calibration = set(
        random.Random(config.run.seed + 1).sample(rest, round(len(groups) * config.sft.calibration_fraction))
    )
    split_of = {g: "validation" if g in held else "calibration" if g in calibration else "train" for g in groups}
    rows, too_long, not_answers = [], 0, 0
    ctx.progress.start("rows", "labelled rows", len(judge))
    for pair in judge:
        ctx.progress.advance("rows")
        scores = judge.score(pair.conversation, pair.response)
        if answer_before_block(pair.response) != pair.response:  # holds a tag: the scored answer would differ
            not_answers += 1
            continue
        prompt_ids = encode(render_prompt(pair.conversation, ctx.prompt_mode, template))
        ids, positions = forced_token_layout(encode, pair.response, [digits[scores[a]] for a in ATTRIBUTES])
        if len(prompt_ids) + len(ids) > config.sft.max_length:
            too_long += 1
            continue
        rows.append(
            {
                "group": pair.group_index,
                "split": split_of[pair.group_index],
                "ids": prompt_ids + ids,
                "positions": [len(prompt_ids) + p for p in positions],
                "scores": scores,
            }
        )
    ctx.progress.finish("rows")
    if not any(row["split"] == "train" for row in rows):
        raise TrainingError(f"no labelled row fits sft.max_length={config.sft.max_length}; raise it")
    rewrite_records(ctx.run_dir / "rows.jsonl", rows)
    return LabelRowsResult(
        labelled_pairs=len(judge),
        rows=len(rows),
        train_rows=sum(row["split"] == "train" for row in rows),
        validation_rows=sum(row["split"] == "validation" for row in rows),
        calibration_rows=sum(row["split"] == "calibration" for row in rows),
        calibration_groups=sorted(calibration),
        left_out_too_long=too_long,
        left_out_holding_a_tag=not_answers,
        label_lookups=judge.lookups,
        judge=f"{judge.name}: {judge.source}",
        data_sha256=sha256_of(config.data_path()),
        tokens_mean=round(sum(len(row["ids"]) for row in rows) / len(rows), 1),
    )


def _load_model(model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    return model


def split_layer(ctx: RunContext, model) -> int:
    """Index of the first trainable decoder layer."""
    total = len(model.model.layers)
    top = ctx.config.sft.trainable_top_layers
    if not 1 <= top <= total:
        raise TrainingError(f"sft.trainable_top_layers={top}, but the model has {total} decoder layers")
    return total - top


def features_phase(ctx: RunContext) -> FeaturesResult:
    """The frozen layers' output for every row, in shards of safetensors (a finished shard is never redone)."""
    import torch
    from safetensors.torch import save_file

    rows = read_records(ctx.run_dir / "rows.jsonl")
    model = _load_model(ctx.base_model)
    split = split_layer(ctx, model)
    lower = model.model  # embeddings + the frozen layers; no final norm, no LM head
    lower.layers = lower.layers[:split]
    lower.config.num_hidden_layers = split
    lower.norm = torch.nn.Identity()
    lower.eval()
    directory = ctx.run_dir / "features"
    directory.mkdir(exist_ok=True)
    ctx.progress.start("features", f"frozen layers 0-{split - 1} (cached once)", len(rows))
    for start in range(0, len(rows), SHARD_ROWS):
        path = directory / f"shard_{start // SHARD_ROWS:05d}.safetensors"
        chunk = range(start, min(start + SHARD_ROWS, len(rows)))
        if not path.exists():
            tensors = {}
            with torch.inference_mode():
                for i in chunk:
                    hidden = lower(input_ids=torch.tensor([rows[i]["ids"]])).last_hidden_state[0]
                    tensors[f"row_{i}"] = hidden.contiguous()
            tmp = path.with_suffix(".tmp")
            save_file(tensors, str(tmp))
            tmp.replace(path)
        ctx.progress.advance("features", len(chunk))
    ctx.progress.finish("features")
    size = sum(p.stat().st_size for p in directory.glob("shard_*.safetensors"))
    return FeaturesResult(first_trained_layer=split, shards=-(-len(rows) // SHARD_ROWS), bytes=size)


def load_features(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    features = {}
    for path in sorted((run_dir / "features").glob("shard_*.safetensors")):
        features.update({int(name[4:]): tensor for name, tensor in load_file(str(path)).items()})
    return features


def soft_targets(scores: dict[str, int], sigma: float):
    """(5, 10) target distributions: one-hot on the human digit, or a discretised Gaussian of width sigma."""
    import torch

    digits = torch.arange(SCALE_MAX + 1, dtype=torch.float32)
    human = torch.tensor([float(scores[a]) for a in ATTRIBUTES])[:, None]
    if sigma <= 0:
        return (digits[None, :] == human).float()
    weights = torch.exp(-((digits[None, :] - human) ** 2) / (2 * sigma**2))
    return weights / weights.sum(dim=1, keepdim=True)


def top_model(ctx: RunContext, split: int):
    """The base model cut to its top layers (fed the cached features as `inputs_embeds`), all else frozen."""
    model = _load_model(ctx.base_model)
    model.model.layers = model.model.layers[split:]
    model.config.num_hidden_layers = len(model.model.layers)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trainable = {f"model.layers.{i}.": f"model.layers.{split + i}." for i in range(len(model.model.layers))}
    named = {}
    for name, parameter in model.named_parameters():
        if name.startswith("model.layers.") or name.startswith("model.norm."):
            parameter.requires_grad_(True)
            prefix = next((p for p in trainable if name.startswith(p)), None)
            named[name] = name if prefix is None else trainable[prefix] + name[len(prefix) :]
    return model, named  # named: name in the cut model -> name in the full checkpoint


def digit_log_probs(model, hidden, positions: list[int], digit_ids):
    """(5, 10) log-probabilities of the ten digits at each score position (full-vocabulary softmax)."""
    import torch

    keep = torch.tensor([p - 1 for p in positions])  # the logit at t predicts the token at t + 1
    logits = model(inputs_embeds=hidden[None], logits_to_keep=keep).logits[0].float()
    return torch.log_softmax(logits, dim=-1)[:, digit_ids]


def evaluate_rows(model, features: dict, rows: list[dict], indices: list[int], digit_ids, sigma: float) -> dict:
    """Loss, top-1 and MAE of the expected score per attribute on `indices` (teacher-forced, as trained)."""
    import torch

    if not indices:
        return {}
    loss, hits, errors = 0.0, torch.zeros(len(ATTRIBUTES)), torch.zeros(len(ATTRIBUTES))
    with torch.inference_mode():
        for i in indices:
            log_probs = digit_log_probs(model, features[i], rows[i]["positions"], digit_ids)
            loss += float(-(soft_targets(rows[i]["scores"], sigma) * log_probs).sum(dim=1).mean())
            probs = log_probs.exp() / log_probs.exp().sum(dim=1, keepdim=True)
            human = torch.tensor([float(rows[i]["scores"][a]) for a in ATTRIBUTES])
            expected = (probs * torch.arange(SCALE_MAX + 1)).sum(dim=1)
            hits += (probs.argmax(dim=1).float() == human).float()
            errors += (expected - human).abs()
    n = len(indices)
    return {
        "loss": round(loss / n, 4),
        "top1": {a: round(float(hits[k]) / n, 4) for k, a in enumerate(ATTRIBUTES)},
        "mae_expected": {a: round(float(errors[k]) / n, 4) for k, a in enumerate(ATTRIBUTES)},
    }


def _better(entry: dict, incumbent: dict) -> bool:
    """Model selection on the validation prompts of the training half (lower loss); without them, the newest."""
    loss, best = (entry.get("validation") or {}).get("loss"), (incumbent.get("validation") or {}).get("loss")
    return loss is None or best is None or loss < best


def sft_phase(ctx: RunContext, features_result: FeaturesResult) -> DistillSftResult:
    """AdamW on the top layers over the cached features, cosine schedule; state saved after every epoch."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    config, sft = ctx.config, ctx.config.sft
    rows = read_records(ctx.run_dir / "rows.jsonl")
    features = load_features(ctx.run_dir)
    model, named = top_model(ctx, features_result.first_trained_layer)
    digit_ids = torch.tensor(load_card(ctx.base_model).digit_token_ids)
    train = [i for i, row in enumerate(rows) if row["split"] == "train"]
    held = [i for i, row in enumerate(rows) if row["split"] == "validation"]
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=sft.learning_rate, weight_decay=sft.weight_decay)
    per_step = sft.per_device_batch * sft.grad_accum
    steps_per_epoch = -(-len(train) // per_step)
    total_steps = steps_per_epoch * sft.epochs
    schedule = get_cosine_schedule_with_warmup(optimizer, math.ceil(sft.warmup_ratio * total_steps), total_steps)
    state_path = ctx.run_dir / "sft" / "state.pt"
    history: list[dict] = []
    first_epoch, best = 0, None
    if state_path.exists():  # resume after the last complete epoch
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        history, first_epoch, best = state["history"], state["epochs_done"], state["best"]
    if first_epoch == 0:
        history.append({"epoch": 0, "validation": evaluate_rows(model, features, rows, held, digit_ids, 0.0)})
    ctx.progress.start("sft", f"masked SFT, top {sft.trainable_top_layers} layers", total_steps)
    ctx.progress.advance("sft", first_epoch * steps_per_epoch)
    started = time.monotonic()
    for epoch in range(first_epoch, sft.epochs):
        model.train()
        order = list(train)
        random.Random(config.run.seed * 1000 + epoch).shuffle(order)
        epoch_loss = 0.0
        for begin in range(0, len(order), per_step):
            group = order[begin : begin + per_step]
            for i in group:
                log_probs = digit_log_probs(model, features[i], rows[i]["positions"], digit_ids)
                loss = -(soft_targets(rows[i]["scores"], sft.target_sigma) * log_probs).sum(dim=1).mean()
                (loss / len(group)).backward()
                epoch_loss += loss.item()
            torch.nn.utils.clip_grad_norm_(parameters, sft.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            ctx.progress.advance("sft")
        model.eval()
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": round(epoch_loss / len(order), 4),
                "validation": evaluate_rows(model, features, rows, held, digit_ids, 0.0),
            }
        )
        trained = {named[n]: p.detach().clone() for n, p in model.named_parameters() if n in named}
        if best is None or _better(history[-1], history[best["index"]]):
            best = {"index": len(history) - 1, "epoch": epoch + 1, "trained": trained}
        state = {
            "model": {n: p for n, p in model.state_dict().items() if n in named},
            "best": best,
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "history": history,
            "epochs_done": epoch + 1,
        }
        state_path.parent.mkdir(exist_ok=True)
        tmp = state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(state_path)
        kill_point(f"labels.sft.epoch{epoch + 1}")
    ctx.progress.finish("sft")
    return DistillSftResult(
        train_rows=len(train),
        validation_rows=len(held),
        epochs=sft.epochs,
        update_steps=total_steps,
        trained_tensors=len(named),
        trained_parameters=sum(p.numel() for p in parameters),
        history=history,
        kept_epoch=best["epoch"],
        runtime_s_this_run=round(time.monotonic() - started, 1),
        loss_scope="five score digit tokens only",
    )


def export(ctx: RunContext, rows: LabelRowsResult, sft: DistillSftResult) -> DeltaExportResult:
    """delta/delta.safetensors + delta.json, and final/ = base + delta with its card."""
    import torch
    from safetensors.torch import load_file

    trained = torch.load(ctx.run_dir / "sft" / "state.pt", weights_only=False)["best"]["trained"]
    base_weights = ctx.base_model / WEIGHTS_FILE
    base_sha = sha256_of(base_weights)
    delta_path = ctx.run_dir / "delta" / "delta.safetensors"
    delta_sha = export_delta(
        load_file(str(base_weights)), trained, list(trained), delta_path, base_sha, ctx.config.sft.delta_encoding
    )
    base_card = load_card(ctx.base_model)
    metrics = {
        "rows": {k: v for k, v in rows.to_dict().items() if k != "data_sha256"},
        "sft": {
            k: getattr(sft, k)
            for k in ("train_rows", "validation_rows", "epochs", "update_steps", "kept_epoch", "history")
        },
    }
    card = ModelCard(
        model_name=f"{base_card.model_name}-{ctx.config.run.name}",
        prompt_mode=ctx.prompt_mode,
        digit_token_ids=base_card.digit_token_ids,  # the tokenizer is the base's, unchanged
        lineage=Lineage(
            base_model=base_card.lineage.base_model,
            source=f"see train ({ctx.config.run.name}, labels-distill)",
            judge=rows.judge,
            data_window=f"{ctx.config.data.path} [{ctx.config.data.kitware_file}] {rows.rows} rows",
            parent=base_card.model_name,
            base_sha256=base_sha,
            data_sha256=rows.data_sha256,
            delta_sha256=delta_sha,
            config=ctx.config.to_dict(),
            metrics=metrics,
        ),
    )
    final = ctx.run_dir / "final"
    weights_sha = build_from_delta(ctx.base_model, delta_path, final, card)
    record = {
        "model_name": card.model_name,
        "weights_sha256": weights_sha,
        "delta_file": delta_path.name,
        "delta_bytes": delta_path.stat().st_size,
        "card": card.to_dict(),
        "config_yaml": dump_config(ctx.config),
    }
    write_json_atomic(delta_path.with_name("delta.json"), record)
    return DeltaExportResult(
        delta=str(delta_path), delta_sha256=delta_sha, weights_sha256=weights_sha, final=str(final)
    )
