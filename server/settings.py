"""Server settings: one pydantic-settings object, read from `SEE_*` environment variables and CLI flags.

Built once at boot, validated, and passed explicitly to whatever needs it (no module-level globals).
Engine knobs default to what works on a 2-core CPU machine (see ENVIRONMENT.md) and switch to GPU-sized
values when a GPU is present; each can be set explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.policy import PolicyThresholds


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SEE_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    # what to serve
    model: Path | None = Field(None, description="Checkpoint directory with see_card.json; unset = the default model")
    served_model_name: str | None = Field(
        None, description="Name reported in responses; default: the card's model_name"
    )
    cache_dir: Path | None = Field(
        None, description="Where the default model is provisioned; default ~/.cache/see-sidecar"
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
    api_key_file: Path | None = Field(None, description="File with one API key per line (e.g. a mounted Secret)")
    protect_metrics: bool = Field(False, description="Also require a key for /metrics")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies get 413")
    max_pending_requests: int = Field(64, ge=1, description="Model requests in progress at once; more get 429")
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
    cpu_kv_cache_gib: float = Field(2.0, gt=0.0, description="CPU only: KV cache size in GiB")
    cpu_threads_bind: str = Field("auto", description="CPU only: OpenMP core binding, e.g. 0-1; auto = all cores")
    tensor_parallel_size: int = Field(1, ge=1, description="GPU only")
    gpu_memory_utilization: float = Field(0.90, gt=0.0, le=1.0, description="GPU only")
    policy: PolicyThresholds = Field(
        default_factory=PolicyThresholds, description="Decision thresholds, e.g. SEE_POLICY__REVIEW_BELOW_QUALITY=0.6"
    )
    warmup: bool = Field(True, description="Run one request before reporting ready, so the first user is not slow")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.model is not None and not self.model.is_dir():
            raise ValueError(f"model directory {self.model} does not exist")
        if self.api_key_file is not None and not self.api_key_file.is_file():
            raise ValueError(f"api_key_file {self.api_key_file} does not exist")
        return self

    def all_api_keys(self) -> list[str]:
        """Keys from settings plus the key file (read at boot; restart or roll the pod to rotate)."""
        keys = [k.strip() for k in self.api_keys if k.strip()]
        if self.api_key_file is not None:
            keys += [line.strip() for line in self.api_key_file.read_text().splitlines() if line.strip()]
        return keys
