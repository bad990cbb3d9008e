"""Server settings: one pydantic-settings object, read from `SEE_*` environment variables and CLI flags.

Built once at boot, validated, and passed explicitly to whatever needs it (no module-level globals).
Engine knobs default to what works on a 2-core CPU machine (see ENVIRONMENT.md) and switch to GPU-sized
values when a GPU is present; each can be set explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from selfeval.models import NAMED_MODELS
from server.policy import PolicyThresholds


def default_ledger_url() -> str:
    return str(Path.home() / ".local" / "share" / "see-sidecar" / "ledger.sqlite3")


class LedgerSettings(BaseModel):
    """The score ledger (SEE_LEDGER__*): every scored response and every judge verdict on it."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Record every scored response; /v1/feedback needs it")
    url: str = Field(
        default_factory=default_ledger_url,
        description="SQLite file path (or sqlite:///path), or a postgresql:// DSN shared by replicas",
    )
    store_text: bool = Field(False, description="Also store prompt and answer text (off: SHA-256 hashes only)")
    retention_days: float | None = Field(
        None, gt=0, description="Delete responses and their feedback older than this; unset = keep everything"
    )
    write_timeout_s: float = Field(
        5.0, gt=0, description="A response waits at most this long for its ledger record, then is sent anyway"
    )
    feedback_timeout_s: float = Field(
        10.0, gt=0, description="/v1/feedback waits at most this long for the commit, then answers 503 (retry)"
    )
    max_queued_writes: int = Field(10_000, ge=1, description="Writes waiting for the database; beyond, refused")
    required: bool = Field(
        False,
        description="Refuse to start when the database is unreachable (off: serve, record nothing, reconnect)",
    )


class ShadowSettings(BaseModel):
    """Shadow judging (SEE_SHADOW__*): a sampled share of responses sent to a judge; verdicts land as feedback."""

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(0.0, ge=0.0, le=1.0, description="Share of scored responses to judge; 0 = off")
    judge_url: str | None = Field(None, description="OpenAI-compatible base URL of the judge, e.g. .../v1")
    judge_model: str | None = Field(None, description="The judge's model name")
    judge_api_key_env: str = Field("SEE_SHADOW_JUDGE_API_KEY", description="Env variable holding the judge key")
    queue_size: int = Field(256, ge=1, description="Responses waiting for the judge; beyond, new ones are dropped")
    concurrency: int = Field(2, ge=1, description="Judge calls at once")
    max_attempts: int = Field(3, ge=1, description="Attempts per response before it is counted as failed")
    timeout_s: float = Field(60.0, ge=1, description="Timeout of one judge call")
    backoff_base_s: float = Field(1.0, ge=0, description="First retry delay (doubles per attempt, jittered)")

    @model_validator(mode="after")
    def _check(self) -> ShadowSettings:
        if self.rate > 0 and not (self.judge_url and self.judge_model):
            raise ValueError("shadow judging (rate > 0) needs judge_url and judge_model")
        return self


class MonitorSettings(BaseModel):
    """Calibration monitoring from feedback (SEE_MONITOR__*): rolling MAE/ECE and the drift alarm."""

    model_config = ConfigDict(extra="forbid")

    window: int = Field(200, ge=10, description="Feedback records in the recent and in the reference window")
    min_count: int = Field(50, ge=5, description="Fewer records in either window: no drift verdict yet")
    drift_threshold: float = Field(
        0.75, gt=0, description="Drift when the recent mean absolute error exceeds the reference's by this (0-9)"
    )
    drift_z: float = Field(3.0, gt=0, description="... and the increase is this many standard errors (not noise)")
    judge: str | None = Field(None, description="Monitor this judge's feedback only; unset = every judge")
    refresh_interval_s: float = Field(30.0, gt=0, description="Re-read the ledger this often (other replicas)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SEE_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    # what to serve
    model: Path | None = Field(
        None,
        description="Checkpoint directory with see_card.json, or a provisioned model's name "
        f"({' or '.join(NAMED_MODELS)}); unset = the default model",
    )
    served_model_name: str | None = Field(
        None, description="Name reported in responses; default: the card's model_name"
    )
    cache_dir: Path | None = Field(
        None, description="Where the default model is provisioned; default ~/.cache/see-sidecar"
    )
    engine_url: str | None = Field(
        None,
        description="A vLLM OpenAI-compatible server (or a router) serving the same checkpoint to generate with, "
        "e.g. http://vllm:8000; unset = vLLM in this process",
        pattern=r"^https?://",
    )
    answer_model: Path | None = Field(
        None,
        description="Split mode: write answers with this model (a directory or a provisioned model's name, e.g. "
        "SmolLM2-135M-Instruct, the default's untrained base) and read their scores with SEE_MODEL, in a second "
        "vLLM engine in this process; unset = the served checkpoint writes its own answers",
    )
    answer_engine_url: str | None = Field(
        None,
        description="Split mode with the answers written by a vLLM OpenAI-compatible server (or router) serving a "
        "model with SEE_MODEL's tokenizer, e.g. the untrained base; unset = see answer_model",
        pattern=r"^https?://",
    )

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # generation defaults and limits
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request does not set it")
    default_temperature: float = Field(0.8, ge=0.0, le=2.0, description="the SEE training sampler's temperature")
    default_top_p: float = Field(0.9, gt=0.0, le=1.0, description="the SEE training sampler's top_p")

    # limits and security
    max_prompt_tokens: int | None = Field(
        None, ge=1, description="Longer prompts get 400; default: whatever fits the context"
    )
    max_answer_tokens: int = Field(4096, ge=1, description="Largest max_tokens a request may ask for (400 beyond)")
    api_keys: list[str] = Field(
        default_factory=list, description="Bearer keys for /generate and /v1 (env: JSON list); empty = no auth"
    )
    api_key_file: Path | None = Field(
        None, description="File with one API key per line, '#' lines are comments (e.g. a mounted Secret)"
    )
    protect_metrics: bool = Field(False, description="Also require a key for /metrics")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies get 413")
    body_timeout_s: float = Field(
        30.0, gt=0, description="A request body not received in full within this long gets 408 (slow clients)"
    )
    max_pending_requests: int = Field(64, ge=1, description="Model requests in progress at once; more get 429")
    max_pending_tokens: int | None = Field(
        None,
        ge=1,
        description="Tokens of work admitted at once (prompt + n x (max_tokens + readout)); more get 429. "
        "Default: twice the engine's KV-cache capacity",
    )
    max_pending_feedback: int = Field(256, ge=1, description="/v1/feedback requests in progress at once; more get 429")
    retry_after_s: int = Field(2, ge=1, description="Retry-After sent with a 429")
    request_timeout_s: float = Field(600.0, gt=0, description="A model request taking longer is aborted (504)")
    log_text: bool = Field(False, description="Log prompts and answers (off: only ids, sizes and timings)")

    # engine
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_model_len: int | None = Field(
        None, ge=64, description="Context length; default: the model's own, capped at 8192"
    )
    dtype: str = Field("auto", description="auto = float32 on CPU, the checkpoint's dtype on GPU")
    enforce_eager: bool | None = Field(None, description="auto = eager on CPU (faster start, no gain from compile)")
    enable_prefix_caching: bool = True
    kv_block_size: int | None = Field(
        None,
        ge=16,
        description="Tokens per KV-cache block; prefix caching reuses whole blocks only, so a forced readout "
        "recomputes up to one block per step. auto = 32 on CPU (vLLM's CPU default is 128), vLLM's default on GPU",
    )
    readout_requests: Literal["one", "per_step"] = Field(
        "one",
        description="How a forced readout's five steps reach the in-process engine: one = one vLLM streaming-input "
        "request continued step by step (later steps compute only their own tokens); per_step = a request per "
        "step with the whole context (prefix caching skips the full KV blocks held). A remote engine is per_step",
    )
    cpu_kv_cache_gib: float = Field(2.0, gt=0.0, description="CPU only: KV cache size in GiB")
    cpu_threads_bind: str = Field("auto", description="CPU only: OpenMP core binding, e.g. 0-1; auto = all cores")
    tensor_parallel_size: int = Field(1, ge=1, description="GPU only")
    gpu_memory_utilization: float = Field(0.90, gt=0.0, le=1.0, description="GPU only")
    policy: PolicyThresholds = Field(
        default_factory=PolicyThresholds, description="Decision thresholds, e.g. SEE_POLICY__REVIEW_BELOW_QUALITY=0.6"
    )
    allow_looser_thresholds: bool = Field(
        False,
        description="Let per-request decision_thresholds loosen the policy (off: they may only tighten it, so a "
        "caller cannot get its own answer accepted by asking)",
    )
    warmup: bool = Field(True, description="Run one request before reporting ready, so the first user is not slow")

    # calibration in production
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    calibration_file: Path | None = Field(
        None, description="Calibration map to apply; default: see_calibration.json in the model directory, if any"
    )
    decide_on_calibrated: bool = Field(
        True, description="The decision policy reads calibrated scores when a map is loaded"
    )
    certified_policy_file: Path | None = Field(
        None,
        description="Certified decision policy (`see calibrate policy`); default: see_policy.json in the model "
        "directory, if any",
    )
    use_certified_policy: bool = Field(
        True, description="Decide with the certified policy when one is loaded (off: the hand-set thresholds)"
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for name in ("model", "answer_model"):
            value = getattr(self, name)
            if value is not None and not value.is_dir() and str(value) not in NAMED_MODELS:
                raise ValueError(
                    f"{name} directory {value} does not exist (provisioned models by name: {', '.join(NAMED_MODELS)})"
                )
        if self.answer_model is not None and self.answer_engine_url is not None:
            raise ValueError("set answer_model (a second engine here) or answer_engine_url (a remote one), not both")
        if self.calibration_file is not None and not self.calibration_file.is_file():
            raise ValueError(f"calibration_file {self.calibration_file} does not exist")
        if self.certified_policy_file is not None and not self.certified_policy_file.is_file():
            raise ValueError(f"certified_policy_file {self.certified_policy_file} does not exist")
        if self.shadow.rate > 0 and not self.ledger.enabled:
            raise ValueError("shadow judging stores its verdicts in the ledger: enable SEE_LEDGER__ENABLED")
        if self.api_key_file is not None and not self.api_key_file.is_file():
            raise ValueError(f"api_key_file {self.api_key_file} does not exist")
        return self

    def all_api_keys(self) -> list[str]:
        """Keys from settings plus the key file (read at boot; restart or roll the pod to rotate)."""
        keys = [k.strip() for k in self.api_keys if k.strip()]
        if self.api_key_file is not None:
            lines = (line.strip() for line in self.api_key_file.read_text().splitlines())
            keys += [line for line in lines if line and not line.startswith("#")]  # '#' lines are comments
        return keys
