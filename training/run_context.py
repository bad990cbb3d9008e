"""The run context every training phase takes: the resolved config, the run directory, the base model, the
process group, progress reporting and the run's judge client (its cache in the run directory, its concurrency
shared by the ranks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from selfeval.judge import JudgeClient, JudgeSettings
from training.config import TrainConfig
from training.progress import Progress
from training.ranks import Ranks


@dataclass
class RunContext:
    config: TrainConfig
    run_dir: Path
    base_model: Path
    prompt_mode: str
    on_gpu: bool
    progress: Progress
    ranks: Ranks = field(default_factory=Ranks)
    judge: JudgeClient = field(init=False)

    def __post_init__(self) -> None:
        settings = self.config.judge
        cache = settings.cache_path or str(self.run_dir / "judge_cache.jsonl")
        # judge.concurrency is the run's budget towards the judge API, shared by the ranks that call it
        shared = {"cache_path": cache, "concurrency": max(1, settings.concurrency // self.ranks.count)}
        self.judge = JudgeClient(JudgeSettings(**{**settings.__dict__, **shared}))
