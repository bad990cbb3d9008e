"""Trained weight deltas: export (trained - base) for the trained tensors, and rebuild a checkpoint from base + delta.

A delta is one safetensors file holding, for each trained tensor, `trained - base` in float16 (the differences
are small, so half precision keeps them to ~1e-3 of their own size while the file stays small enough to commit),
plus the sha256 of the base weights it applies to in its metadata. Applying it is an element-wise float32 add:
`base + float32(delta)`, the same bits on every machine, thread count and CPU kind, so the rebuilt
`model.safetensors` has one sha256 that the shipped manifest pins. A delta for another base, a tensor the base
lacks or a shape mismatch is refused, never half-applied; the output directory appears only when complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from selfeval.card import CARD_FILENAME, ModelCard, write_card

WEIGHTS_FILE = "model.safetensors"
BASE_SHA_KEY = "base_sha256"
# not carried over from the base: its weights, and its card, calibration and certified policy (they describe
# the base's readout)
SKIPPED = frozenset({WEIGHTS_FILE, CARD_FILENAME, "see_calibration.json", "see_policy.json"})


class DeltaError(ValueError):
    """A delta that does not fit its base model, or a rebuilt checkpoint whose hash is not the pinned one."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def export_delta(base: Mapping, trained: Mapping, names: list[str], path: Path, base_sha256: str) -> str:
    """Write float16(trained - base) for `names` to `path` (atomically); returns the file's sha256."""
    import torch
    from safetensors.torch import save_file

    tensors = {}
    for name in sorted(names):
        if base[name].shape != trained[name].shape:
            raise DeltaError(f"{name}: trained shape {tuple(trained[name].shape)} != base {tuple(base[name].shape)}")
        diff = trained[name].detach().to(torch.float32) - base[name].detach().to(torch.float32)
        tensors[name] = diff.to(torch.float16).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={BASE_SHA_KEY: base_sha256, "format": "pt", "dtype": "float16-diff"})
    os.replace(tmp, path)
    return sha256_of(path)


def applied_weights(base_weights: Path, delta_path: Path) -> dict:
    """The base checkpoint's tensors with the delta added (float32), after checking the delta fits this base."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(delta_path), framework="pt") as handle:
        expected = (handle.metadata() or {}).get(BASE_SHA_KEY)
    actual = sha256_of(base_weights)
    if expected != actual:
        raise DeltaError(
            f"{delta_path.name} was trained from base weights sha256 {expected}, but {base_weights} has {actual}; "
            "re-provision the base model (`see model prepare`) or use the delta made for this base"
        )
    tensors = load_file(str(base_weights))
    for name, diff in load_file(str(delta_path)).items():
        if name not in tensors:
            raise DeltaError(f"{delta_path.name} changes {name}, which the base checkpoint does not have")
        if tensors[name].shape != diff.shape or tensors[name].dtype != torch.float32:
            raise DeltaError(f"{name}: delta {tuple(diff.shape)} does not fit base {tuple(tensors[name].shape)} fp32")
        tensors[name] = (tensors[name] + diff.to(torch.float32)).contiguous()
    return tensors


def build_from_delta(
    base_dir: Path, delta_path: Path, out_dir: Path, card: ModelCard, expected_sha256: str | None = None
) -> str:
    """Write base + delta as a full checkpoint directory at `out_dir` (config, tokenizer, weights, `card`).

    Returns the sha256 of the written weights; with `expected_sha256`, a different hash is an error and
    nothing is left at `out_dir`."""
    from safetensors.torch import save_file

    tensors = applied_weights(base_dir / WEIGHTS_FILE, delta_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out_dir.parent) as scratch:
        staged = Path(scratch) / "model"
        staged.mkdir()
        for item in base_dir.iterdir():
            if item.is_file() and item.name not in SKIPPED and item.suffix in (".json", ".txt", ".model", ".jinja"):
                shutil.copy2(item, staged / item.name)
        save_file(tensors, str(staged / WEIGHTS_FILE), metadata={"format": "pt"})
        digest = sha256_of(staged / WEIGHTS_FILE)
        if expected_sha256 is not None and digest != expected_sha256:
            raise DeltaError(
                f"base + {delta_path.name} gave weights sha256 {digest}, expected {expected_sha256}: the base "
                "checkpoint or the delta is not the pinned one"
            )
        write_card(staged, card)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staged, out_dir)
    return digest
