"""The typed records the SEE loop's phases hand each other: one rollout as the RL phase journals it, and each
phase's result as the cycle manifest keeps it.

On disk they stay plain JSON (`rl/rollouts.jsonl`, `cycle_manifest.json`), so runs written before these types
existed still resume; `from_dict` ignores keys it does not know (the manifest adds `seconds` to each phase)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Self


class Record:
    """asdict / from-dict for the frozen dataclasses below."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class RolloutRecord(Record):
    """One completion of a GRPO step, journalled before its reward goes back to the trainer."""

    timestamp: float
    cycle: int
    step: int
    rank: int
    index: int  # the prompt group's index in the dataset
    conversation: list[dict[str, str]]
    raw_output: str
    raw_output_chars: int
    reference_count: int
    format_ok: bool
    answer_text: str | None  # the answer before the block; None when there is none
    self_scores: dict[str, int] | None  # the model's own digits (valid blocks only)
    judge_scores: dict[str, int] | None  # the judge's verdict (valid blocks only)
    reward: dict[str, Any]  # training.reward.RewardBreakdown.as_dict()
    collection_status: str  # judge_ok or format_invalid
    format_error: str | None = None  # format_invalid: the block rule the completion broke
    judge_cached: bool | None = None  # judge_ok: the verdict came from the judge cache
    abs_errors: dict[str, int] | None = None  # judge_ok: |self - judge| per attribute

    OPTIONAL = ("format_error", "judge_cached", "abs_errors")

    def to_dict(self) -> dict[str, Any]:
        """The journal line: the keys of the other outcome are left out, not written as null."""
        return {k: v for k, v in asdict(self).items() if not (k in self.OPTIONAL and v is None)}

    @property
    def judged(self) -> bool:
        return self.collection_status == "judge_ok"


@dataclass(frozen=True)
class RLRun(Record):
    """What the GRPO trainer returns: every step's metrics (those before a resume included) and the engine."""

    steps: list[dict[str, Any]]
    rollout_engine: str  # vllm or transformers


@dataclass(frozen=True)
class RLPhaseResult(Record):
    model: str  # the policy after the phase
    rollout_log: str  # rl/rollouts.jsonl
    summary: dict[str, Any]  # rollouts, format_rate, mean reward / quality / calibration / mae
    judge: dict[str, Any]  # judge calls of every rank and every run of the phase
    resumed_from_step: int | None
    rollout_engine: str
    steps: list[dict[str, Any]]


@dataclass(frozen=True)
class SftDataResult(Record):
    rows: str  # the selected rows (jsonl)
    summary: dict[str, Any]  # raw, usable, selected, skipped by reason, relabelled, mean MAE before
    judge: dict[str, Any]


@dataclass(frozen=True)
class SftResult(Record):
    model: str  # the cycle's SFT model (with its see_card.json)
    metrics: dict[str, Any]  # run_sft's metrics without the per-step losses


# labels-distill (training/labels_distill.py): rows -> features -> sft -> export, recorded in run_manifest.json


@dataclass(frozen=True)
class LabelRowsResult(Record):
    labelled_pairs: int
    rows: int  # rows kept (every split)
    train_rows: int
    validation_rows: int
    calibration_rows: int
    calibration_groups: list[int]  # prompts kept out for `see calibrate policy` (recorded in the card)
    left_out_too_long: int
    left_out_holding_a_tag: int
    label_lookups: int
    judge: str
    data_sha256: str
    tokens_mean: float


@dataclass(frozen=True)
class FeaturesResult(Record):
    first_trained_layer: int
    shards: int
    bytes: int


@dataclass(frozen=True)
class DistillSftResult(Record):
    train_rows: int
    validation_rows: int
    epochs: int
    update_steps: int
    trained_tensors: int
    trained_parameters: int
    history: list[dict[str, Any]]  # per epoch: train_loss, validation {loss, mae_expected, ...}; epoch 0 untrained
    kept_epoch: int  # lowest validation loss
    runtime_s_this_run: float
    loss_scope: str


@dataclass(frozen=True)
class DeltaExportResult(Record):
    delta: str  # delta/delta.safetensors
    delta_sha256: str
    weights_sha256: str  # final/ = base + delta
    final: str
