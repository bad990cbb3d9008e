"""Trained weight deltas: export (trained - base) for the trained tensors, and rebuild a checkpoint from base + delta.

A delta is one safetensors file holding, for each trained tensor, `trained - base`, plus the sha256 of the base
weights it applies to and its encoding in the metadata. Encodings (`sft.delta_encoding`):
- `float16` (2 bytes a weight): the differences are small, so half precision keeps them to ~1e-3 of their own size;
- `int8` (1 byte a weight, for more trained layers under the same file budget): each row of a difference as
  int8 times one float32 scale per row (`<name>` and `scale::<name>`), max |row| / 127, so the rounding error of
  a weight is at most 1/254 of its row's largest change.
Applying either is element-wise float32 arithmetic (`base + float32(delta)`, or `base + float32(q) * scale` as
two separate operations), the same bits on every machine, thread count and CPU kind, so the rebuilt
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


ENCODINGS = {"float16": "float16-diff", "int8": "int8-rowwise-diff"}  # encoding -> the file's `dtype` metadata
SCALE_PREFIX = "scale::"


def _int8_rows(diff):
    """diff (any shape) as int8 rows and one float32 scale per row (dim 0; a vector is one row)."""
    import torch

    rows = diff.reshape(diff.shape[0], -1) if diff.dim() > 1 else diff.reshape(1, -1)
    scale = rows.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    quantised = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return quantised.reshape(diff.shape).contiguous(), scale.contiguous()


def _decoded(quantised, scale):
    import torch

    rows = quantised.reshape(scale.shape[0], -1).to(torch.float32)
    return (rows * scale[:, None]).reshape(quantised.shape)


def export_delta(
    base: Mapping, trained: Mapping, names: list[str], path: Path, base_sha256: str, encoding: str = "float16"
) -> str:
    """Write `trained - base` for `names` to `path` (atomically) in `encoding`; returns the file's sha256."""
    import torch
    from safetensors.torch import save_file

    if encoding not in ENCODINGS:
        raise DeltaError(f"unknown delta encoding {encoding!r}; use one of {sorted(ENCODINGS)}")
    tensors = {}
    for name in sorted(names):
        if base[name].shape != trained[name].shape:
            raise DeltaError(f"{name}: trained shape {tuple(trained[name].shape)} != base {tuple(base[name].shape)}")
        diff = trained[name].detach().to(torch.float32) - base[name].detach().to(torch.float32)
        if encoding == "int8":
            tensors[name], tensors[SCALE_PREFIX + name] = _int8_rows(diff)
        else:
            tensors[name] = diff.to(torch.float16).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={BASE_SHA_KEY: base_sha256, "format": "pt", "dtype": ENCODINGS[encoding]})
    os.replace(tmp, path)
    return sha256_of(path)


def applied_weights(base_weights: Path, delta_path: Path) -> dict:
    """The base checkpoint's tensors with the delta added (float32), after checking the delta fits this base."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(delta_path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    expected, stored = metadata.get(BASE_SHA_KEY), metadata.get("dtype", ENCODINGS["float16"])
    if stored not in ENCODINGS.values():
        raise DeltaError(f"{delta_path.name} holds an unknown delta encoding {stored!r}")
    actual = sha256_of(base_weights)
    if expected != actual:
        raise DeltaError(
            f"{delta_path.name} was trained from base weights sha256 {expected}, but {base_weights} has {actual}; "
            "re-provision the base model (`see model prepare`) or use the delta made for this base"
        )
    tensors = load_file(str(base_weights))
    stored_tensors = load_file(str(delta_path))
    for name, diff in stored_tensors.items():
        if name.startswith(SCALE_PREFIX):
            continue
        if name not in tensors:
            raise DeltaError(f"{delta_path.name} changes {name}, which the base checkpoint does not have")
        if tensors[name].shape != diff.shape or tensors[name].dtype != torch.float32:
            raise DeltaError(f"{name}: delta {tuple(diff.shape)} does not fit base {tuple(tensors[name].shape)} fp32")
        if stored == ENCODINGS["int8"]:
            diff = _decoded(diff, stored_tensors[SCALE_PREFIX + name])
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
