"""The closed SEE loop: cycles of (GRPO phase -> judge-relabelled rows -> masked SFT), resumable.

Layout of a run directory:
    config.yaml, run_manifest.json, window.jsonl (+ _summary.json), judge_cache.jsonl
    cycle_<c>/cycle_manifest.json, rl/{rollouts.jsonl, steps.jsonl, trainer/, model/}, sft_data/, sft_model/
    final/   the last cycle's SFT model with its see_card.json (`see serve --model RUN/final`)
Resume (docs/method.md §7.2, fixed): every phase records itself in the cycle manifest only when its outputs are
complete, and a restarted run skips recorded phases. An RL phase that was cut short resumes from its newest
complete checkpoint (`rl.checkpoint_every`; its journals drop the steps after it), any other phase is redone
from its input; judge calls come from the judge cache, so nothing is paid twice. What resume needs is kept: the
input model of the current cycle stays until the cycle is recorded done; earlier weights go when
`keep_checkpoints: last`; an RL checkpoint goes as soon as its phase is recorded.
Several processes (`training.ranks`): the trainers run on every rank, every other write is main's, and the
other ranks take each phase's record from the manifest main wrote.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from pathlib import Path

from selfeval.card import Lineage, ModelCard, digit_token_ids_for, load_card, write_card
from selfeval.journal import rewrite_records
from selfeval.jsonfile import write_json_atomic
from selfeval.prompts import render_prompt
from training.config import ConfigError, TrainConfig, config_from_dict, dump_config
from training.data import load_groups, read_window, sample_window, write_window
from training.distill import SftRow, build_row, distillable, rows_path, run_sft, select_rows
from training.judge_tally import JudgeTally, phase_totals
from training.memory import release_memory
from training.progress import NullProgress, Progress
from training.ranks import join_ranks
from training.records import RLPhaseResult, RolloutRecord, SftDataResult, SftResult
from training.rl import Checkpoint, StepJournal, check_rollout_engine, latest_checkpoint, run_rl_phase
from training.run_context import RunContext
from training.testing.faults import kill_point

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A run that cannot go on (too few usable rows, a run directory from another config)."""


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def resolve_base_model(config: TrainConfig) -> Path:
    if config.run.base_model in ("default", "default-untrained"):
        from selfeval.models import prepare_base_model, prepare_default_model

        prepare = prepare_default_model if config.run.base_model == "default" else prepare_base_model
        return prepare(report=log.info)
    path = Path(config.run.base_model).expanduser()
    if not path.is_dir():
        raise ConfigError(f"run.base_model {config.run.base_model!r} is not a directory (or 'default')")
    load_card(path)  # a clear error now rather than after the first phase
    return path


def prepare_run(config: TrainConfig, run_dir: Path, progress: Progress | None = None) -> RunContext:
    """Create or reopen a run directory; a reopened one must have been started with the same config.

    Joins the launcher's process group first when there are several ranks; main creates the directory and
    prepares the base model before the others look at either."""
    import torch

    on_gpu = config.run.device == "cuda" or (config.run.device == "auto" and torch.cuda.is_available())
    check_rollout_engine(config, on_gpu)  # before the run directory exists: a refusal leaves nothing behind
    ranks = join_ranks(on_gpu)
    if ranks.is_main:
        _open_run_dir(config, run_dir)
        base = resolve_base_model(config)
    ranks.barrier()
    if not ranks.is_main:
        _open_run_dir(config, run_dir)
        base = resolve_base_model(config)
    mode = config.run.prompt_mode if config.run.prompt_mode != "auto" else load_card(base).prompt_mode
    return RunContext(config, run_dir, base, mode, on_gpu, progress or NullProgress(), ranks)


def _open_run_dir(config: TrainConfig, run_dir: Path) -> None:
    saved = run_dir / "config.yaml"
    if saved.exists():
        import yaml

        previous = config_from_dict(yaml.safe_load(saved.read_text(encoding="utf-8")))
        if previous != config:
            raise TrainingError(
                f"{run_dir} was started with another config (see {saved}); resume with the same config, "
                "or start a new run directory"
            )
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = saved.with_suffix(".tmp")
        tmp.write_text(dump_config(config), encoding="utf-8")
        os.replace(tmp, saved)


def prompt_texts(ctx: RunContext, model_dir: Path, groups) -> list[str]:
    """The rendered prompt of each group, in the run's prompt mode, with `model_dir`'s chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def template(messages):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    return [render_prompt(g.conversation, ctx.prompt_mode, template) for g in groups]


def ensure_window(ctx: RunContext):
    """The fixed window: sampled once per run (length-filtered first, by main), then reused by every cycle."""
    path = ctx.run_dir / "window.jsonl"
    if not path.exists() and ctx.ranks.is_main:
        _sample_window(ctx, path)
    ctx.ranks.barrier()
    return read_window(path)


def _sample_window(ctx: RunContext, path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ctx.base_model)
    groups = load_groups(ctx.config.data_path(), ctx.config.data.kitware_file)
    texts = dict(zip((g.index for g in groups), prompt_texts(ctx, ctx.base_model, groups), strict=True))
    window = sample_window(
        groups,
        ctx.config.data.window_size,
        ctx.config.run.seed,
        lambda g: len(tokenizer(texts[g.index], add_special_tokens=False)["input_ids"]),
        ctx.config.data.max_prompt_tokens,
    )
    write_window(window, path)


def _rollout_summary(records: list[RolloutRecord]) -> dict:
    valid = [r for r in records if r.format_ok]
    return {
        "rollouts": len(records),
        "format_rate": len(valid) / len(records) if records else 0.0,
        "reward": _mean(r.reward["reward"] for r in records),
        "quality": _mean(r.reward["quality"] for r in valid),
        "calibration": _mean(r.reward["calibration"] for r in valid),
        "calibration_linear": _mean(r.reward["calibration_linear"] for r in valid),
        "mae": _mean(r.reward["mae"] for r in valid),
    }


def read_rollouts(path: Path) -> list[RolloutRecord]:
    return [RolloutRecord.from_dict(record) for record in StepJournal(path).read()]


def rl_phase(ctx: RunContext, cycle: int, cycle_dir: Path, input_model: Path, window) -> RLPhaseResult:
    rl_dir = cycle_dir / "rl"
    resume = _resumable_checkpoint(ctx, rl_dir)
    if ctx.ranks.is_main and rl_dir.exists():
        _restart_rl_dir(rl_dir, resume)
    ctx.ranks.barrier()
    tally = JudgeTally(ctx.judge, rl_dir, ctx.ranks.index)
    rl = ctx.config.rl
    done_steps = resume.step if resume is not None else 0
    rollouts = rl.steps * rl.prompts_per_step * rl.num_generations // ctx.ranks.count
    mine = f" (rank {ctx.ranks.index} of {ctx.ranks.count})" if ctx.ranks.count > 1 else ""
    ctx.progress.start("rl_steps", f"cycle {cycle} GRPO steps", rl.steps)
    ctx.progress.start("rollouts", f"cycle {cycle} rollouts{mine}", rollouts)
    ctx.progress.start("judge", f"cycle {cycle} judge (RL){mine}", None)
    if done_steps:
        ctx.progress.advance("rl_steps", done_steps)
        ctx.progress.advance("rollouts", rollouts * done_steps // rl.steps)
    texts = prompt_texts(ctx, input_model, window)
    trained = run_rl_phase(
        ctx,
        cycle,
        input_model,
        list(zip(window, texts, strict=True)),
        rl_dir,
        resume=resume,
        on_checkpoint=lambda step: kill_point(f"cycle{cycle}.rl.step{step}"),
        tally=tally,
    )
    for task in ("rl_steps", "rollouts", "judge"):
        ctx.progress.finish(task)
    tally.save()
    ctx.ranks.barrier()  # every rank's rollouts and judge counters are on disk
    return RLPhaseResult(
        model=str(rl_dir / "model"),
        rollout_log=str(rl_dir / "rollouts.jsonl"),
        summary=_rollout_summary(read_rollouts(rl_dir / "rollouts.jsonl")),
        judge=phase_totals(rl_dir),  # every rank, every run of the phase (a killed one's calls included)
        resumed_from_step=done_steps or None,
        rollout_engine=trained.rollout_engine,
        steps=trained.steps,
    )


def _resumable_checkpoint(ctx: RunContext, rl_dir: Path) -> Checkpoint | None:
    """The RL phase's newest complete checkpoint, if this run can resume from it (same number of processes:
    the data order and the per-rank RNG states depend on it)."""
    checkpoint = latest_checkpoint(rl_dir / "trainer") if ctx.config.rl.checkpoint_every else None
    if checkpoint is not None and checkpoint.processes != ctx.ranks.count:
        if ctx.ranks.is_main:
            log.warning(
                "%s was saved by %d processes, this run has %d: the RL phase is redone from its input model",
                checkpoint.path,
                checkpoint.processes,
                ctx.ranks.count,
            )
        return None
    return checkpoint


def _restart_rl_dir(rl_dir: Path, resume: Checkpoint | None) -> None:
    """A phase cut short: from a checkpoint, drop the journal records of the steps it will redo; with none,
    set its journals aside (they stay readable) and start over. Either way no half-saved model is left."""
    shutil.rmtree(rl_dir / "model", ignore_errors=True)
    for name in ("rollouts", "steps"):
        journal = rl_dir / f"{name}.jsonl"
        if resume is not None:
            dropped = StepJournal(journal).drop_after(resume.step)
            log.info("resuming the RL phase from %s: %d %s records after it dropped", resume.path, dropped, name)
        elif journal.exists():
            journal.rename(rl_dir / f"{name}.aborted-{int(time.time())}.jsonl")
    if resume is None:
        shutil.rmtree(rl_dir / "trainer", ignore_errors=True)


async def _rows_from_rollouts(
    ctx: RunContext, records: list[RolloutRecord], window, prompt_text: dict[int, str], tally: JudgeTally
) -> dict:
    """SFT rows from the rollout log; format failures (when included) are judged here, concurrently."""
    groups = {g.index: g for g in window}
    skipped: dict[str, int] = {}
    usable: list[tuple[RolloutRecord, str]] = []
    for record in records:
        answer = record.answer_text
        relabel = ctx.config.sft.include_format_failures and bool(answer) and distillable(answer)
        if record.judged or relabel:
            usable.append((record, answer))
        else:
            if not answer:
                reason = "empty_answer"
            elif ctx.config.sft.include_format_failures:
                reason = "answer_contains_tag"  # e.g. a stray [/SELF_EVAL] with no opening tag
            else:
                reason = record.collection_status
            skipped[reason] = skipped.get(reason, 0) + 1

    async def row(record: RolloutRecord, answer: str) -> SftRow:
        index = record.index
        if record.judged:
            judge_scores, self_scores = record.judge_scores, record.self_scores
        else:
            group = groups[index]
            judge_scores = (await ctx.judge.judge(group.conversation, answer, group.references)).scores
            self_scores = None
            tally.save()
            ctx.progress.advance("judge")
        return build_row(index, prompt_text[index], answer, judge_scores, self_scores)

    rows = await asyncio.gather(*(row(record, answer) for record, answer in usable))
    return {"rows": list(rows), "skipped": skipped}


def sft_data_phase(ctx: RunContext, cycle: int, cycle_dir: Path, rl: RLPhaseResult, window) -> SftDataResult:
    records = read_rollouts(Path(rl.rollout_log))
    texts = dict(zip((g.index for g in window), prompt_texts(ctx, Path(rl.model), window), strict=True))
    path = rows_path(cycle_dir)
    tally = JudgeTally(ctx.judge, path.parent, ctx.ranks.index)  # makes the phase's folder
    ctx.progress.start("judge", f"cycle {cycle} judge (SFT rows)", None)
    built = asyncio.run(_rows_from_rollouts(ctx, records, window, texts, tally))
    ctx.progress.finish("judge")
    rows = built["rows"]
    if len(rows) < ctx.config.sft.min_rows:
        raise TrainingError(
            f"cycle {cycle}: only {len(rows)} usable rollouts (need sft.min_rows={ctx.config.sft.min_rows}); "
            f"skipped: {built['skipped']}. More RL steps, a longer rl.max_completion_tokens, or "
            "sft.include_format_failures=true give more rows."
        )
    selected = select_rows(rows, ctx.config.sft, ctx.config.run.seed + cycle)
    rewrite_records(path, [r.to_dict() for r in selected])
    summary = {
        "raw_rollouts": len(records),
        "usable": len(rows),
        "selected": len(selected),
        "skipped": built["skipped"],
        "relabelled_format_failures": sum(r.self_scores is None for r in selected),
        "mean_mae_before": _mean(r.mae_before for r in selected if r.mae_before is not None),
    }
    write_json_atomic(path.parent / "summary.json", summary)
    return SftDataResult(rows=str(path), summary=summary, judge=tally.counts())  # every run of the phase


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def sft_phase(ctx: RunContext, cycle: int, cycle_dir: Path, rl: RLPhaseResult, data: SftDataResult) -> SftResult:
    rows = [SftRow.from_dict(json.loads(line)) for line in Path(data.rows).read_text().splitlines() if line]
    out = cycle_dir / "sft_model"
    if ctx.ranks.is_main:
        shutil.rmtree(out, ignore_errors=True)
    ctx.ranks.barrier()
    metrics = run_sft(
        rows,
        Path(rl.model),
        out,
        ctx.config.sft,
        ctx.config.run.seed + cycle,
        ctx.progress,
        ctx.on_gpu,
        ctx.ranks.is_main,
    )
    ctx.ranks.barrier()  # every rank is done with the trainer's directory and main has saved the weights
    if ctx.ranks.is_main:
        shutil.rmtree(out / "trainer", ignore_errors=True)
        _write_card(ctx, out, cycle)
        write_json_atomic(cycle_dir / "sft_metrics.json", metrics)
    return SftResult(model=str(out), metrics={k: v for k, v in metrics.items() if k != "losses"})


def _write_card(ctx: RunContext, model_dir: Path, cycle: int) -> None:
    from transformers import AutoTokenizer

    base_card = load_card(ctx.base_model)
    window_summary = _read_json(ctx.run_dir / "window_summary.json")
    card = ModelCard(
        model_name=f"{ctx.config.run.name}-cycle{cycle}",
        prompt_mode=ctx.prompt_mode,
        digit_token_ids=digit_token_ids_for(AutoTokenizer.from_pretrained(model_dir)),
        lineage=Lineage(
            base_model=base_card.lineage.base_model,
            source=f"see train ({ctx.config.run.name})",
            cycles=cycle,
            judge=ctx.config.judge.model,
            data_window=f"{ctx.config.data.path} [{ctx.config.data.kitware_file}] "
            f"{window_summary.get('rows')} prompts, seed {window_summary.get('seed')}",
            parent=base_card.model_name,
        ),
    )
    write_card(model_dir, card)


PHASES = ("rl", "sft_data", "sft")
EVERY_RANK = ("rl", "sft")  # the trainers; sft_data (judge relabelling, row selection) is main's alone


def _run_phase(ctx: RunContext, name: str, cycle: int, cycle_dir: Path, phases: dict, input_model: Path, window):
    """Run one phase on the recorded results of the phases before it (the manifest's JSON, typed again)."""
    if name == "rl":
        return rl_phase(ctx, cycle, cycle_dir, input_model, window)
    rl = RLPhaseResult.from_dict(phases["rl"])
    if name == "sft_data":
        return sft_data_phase(ctx, cycle, cycle_dir, rl, window)
    return sft_phase(ctx, cycle, cycle_dir, rl, SftDataResult.from_dict(phases["sft_data"]))


def run_cycle(ctx: RunContext, cycle: int, input_model: Path, window) -> dict:
    cycle_dir = ctx.run_dir / f"cycle_{cycle}"
    manifest_path = cycle_dir / "cycle_manifest.json"
    if ctx.ranks.is_main:
        cycle_dir.mkdir(exist_ok=True)
    ctx.ranks.barrier()
    manifest = _read_json(manifest_path) or {"cycle": cycle, "input_model": str(input_model), "phases": {}}
    for name in PHASES:
        if name in manifest["phases"]:
            log.info("cycle %d: %s already done, skipped", cycle, name)
            continue
        started = time.monotonic()
        if ctx.ranks.is_main or name in EVERY_RANK:
            result = _run_phase(ctx, name, cycle, cycle_dir, manifest["phases"], input_model, window)
            release_memory()  # the next phase loads its own model: do not hold this one's peak under it
        if ctx.ranks.is_main:
            manifest["phases"][name] = result.to_dict() | {"seconds": round(time.monotonic() - started, 1)}
            write_json_atomic(manifest_path, manifest)
            if name == "rl":  # recorded: its resume checkpoint (weights + optimiser state) is dead weight now
                shutil.rmtree(cycle_dir / "rl" / "trainer", ignore_errors=True)
        ctx.ranks.barrier()
        if not ctx.ranks.is_main:
            manifest = _read_json(manifest_path)  # main's record is the run's record
        if ctx.ranks.is_main:
            kill_point(f"cycle{cycle}.{name}")
    return manifest


def run_training(ctx: RunContext, on_cycle_done=None) -> dict:
    """Run (or resume) every cycle; returns the run manifest. `on_cycle_done(manifest)` after each cycle."""
    manifest_path = ctx.run_dir / "run_manifest.json"
    run_manifest = _read_json(manifest_path) or {
        "run_dir": str(ctx.run_dir),
        "seed_model": str(ctx.base_model),
        "prompt_mode": ctx.prompt_mode,
        "cycles": ctx.config.run.cycles,
        "rl_steps_per_cycle": ctx.config.rl.steps,
        "prompts_per_step": ctx.config.rl.prompts_per_step,
        "processes": ctx.ranks.count,
        "window": str(ctx.run_dir / "window.jsonl"),
        "judge": ctx.config.judge.model,
        "cycles_done": 0,
        "final_model": None,
    }
    if ctx.ranks.is_main:
        write_json_atomic(manifest_path, run_manifest)
    window = ensure_window(ctx)
    model = ctx.base_model
    for cycle in range(1, ctx.config.run.cycles + 1):
        cycle_manifest = run_cycle(ctx, cycle, model, window)
        model = Path(cycle_manifest["phases"]["sft"]["model"])
        if ctx.ranks.is_main:
            run_manifest["cycles_done"] = max(run_manifest["cycles_done"], cycle)
            write_json_atomic(manifest_path, run_manifest)
            if ctx.config.run.keep_checkpoints == "last":
                _drop_old_weights(ctx, cycle)
        ctx.ranks.barrier()
        if on_cycle_done is not None:
            on_cycle_done(cycle_manifest)
    final = ctx.run_dir / "final"
    if ctx.ranks.is_main:
        _publish_final(ctx, model, final)
        run_manifest["final_model"] = str(final)
        write_json_atomic(manifest_path, run_manifest)
    ctx.ranks.barrier()
    return _read_json(manifest_path)


def _publish_final(ctx: RunContext, model: Path, final: Path) -> None:
    if (final / "see_card.json").exists():
        return
    shutil.rmtree(final, ignore_errors=True)
    if ctx.config.run.keep_checkpoints == "last":
        os.replace(model, final)  # same filesystem: atomic, and no second copy of the weights
    else:
        shutil.copytree(model, final)


def _drop_old_weights(ctx: RunContext, cycle: int) -> None:
    """After cycle c is recorded: its RL weights and cycle c-1's SFT weights are no longer needed."""
    shutil.rmtree(ctx.run_dir / f"cycle_{cycle}" / "rl" / "model", ignore_errors=True)
    shutil.rmtree(ctx.run_dir / f"cycle_{cycle}" / "rl" / "trainer", ignore_errors=True)
    if cycle > 1:
        shutil.rmtree(ctx.run_dir / f"cycle_{cycle - 1}" / "sft_model", ignore_errors=True)
