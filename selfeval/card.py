"""The model card stored beside every checkpoint (`see_card.json`) and its checks.

The card tells the server how to talk to a checkpoint: the prompt mode (`see-base`, the paper's plain
completion prompt for SEE-trained base models, or `chat`, the tokenizer's chat template plus the SEE
instruction), the token ids of the digits 0-9, the scale, and the lineage (base model, cycles, judge, data
window). The trainer writes it; the server refuses to start without it, and refuses a tokenizer whose digits
are not single tokens, because then no single position would hold a score distribution.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from selfeval.jsonfile import read_json_object, write_json_atomic
from selfeval.rubric import ATTRIBUTES, DIGITS, SCALE_MAX

CARD_FILENAME = "see_card.json"
CARD_FORMAT = "see-card"
CARD_VERSION = 1
PROMPT_MODES = ("see-base", "chat")


class CardError(ValueError):
    """A missing, malformed or inconsistent model card, with what to do about it."""


class TokenizerLike(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


@dataclass(frozen=True)
class Lineage:
    base_model: str
    source: str = ""
    cycles: int = 0
    judge: str | None = None
    data_window: str | None = None
    parent: str | None = None
    # reproducibility of a checkpoint built from a base model and a trained delta (sha256 of the base weights,
    # of the training data and of the delta file), the resolved training config and the training metrics
    base_sha256: str | None = None
    data_sha256: str | None = None
    delta_sha256: str | None = None
    config: dict | None = None
    metrics: dict | None = None


@dataclass(frozen=True)
class ModelCard:
    model_name: str
    prompt_mode: str
    digit_token_ids: tuple[int, ...]
    lineage: Lineage
    scale_max: int = SCALE_MAX
    attributes: tuple[str, ...] = ATTRIBUTES
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if self.prompt_mode not in PROMPT_MODES:
            raise CardError(f"prompt_mode must be one of {list(PROMPT_MODES)}, got {self.prompt_mode!r}")
        if self.scale_max != SCALE_MAX or tuple(self.attributes) != ATTRIBUTES:
            raise CardError(
                f"this server reads the 0-{SCALE_MAX} scale over {list(ATTRIBUTES)}; the card says "
                f"0-{self.scale_max} over {list(self.attributes)}"
            )
        ids = self.digit_token_ids
        if (
            len(ids) != len(DIGITS)
            or len(set(ids)) != len(DIGITS)
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)
        ):
            raise CardError(f"digit_token_ids must be {len(DIGITS)} distinct non-negative ints, got {list(ids)}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["digit_token_ids"] = list(self.digit_token_ids)
        data["attributes"] = list(self.attributes)
        return {"format": CARD_FORMAT, "version": CARD_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        if data.get("format") != CARD_FORMAT or data.get("version") != CARD_VERSION:
            raise CardError(
                f"not a {CARD_FORMAT} v{CARD_VERSION} card "
                f"(format={data.get('format')!r}, version={data.get('version')!r})"
            )
        try:
            lineage = Lineage(**data["lineage"])
            return cls(
                model_name=data["model_name"],
                prompt_mode=data["prompt_mode"],
                digit_token_ids=tuple(data["digit_token_ids"]),
                lineage=lineage,
                scale_max=data["scale_max"],
                attributes=tuple(data["attributes"]),
                created_at=data["created_at"],
            )
        except (KeyError, TypeError) as exc:
            raise CardError(f"malformed card: {exc}") from None


def digit_token_ids_for(tokenizer: TokenizerLike) -> tuple[int, ...]:
    """The ids of the digits 0-9 in this tokenizer; raise CardError unless each digit is one token.

    Also checks the digit stays a bare token right after `": ` (the position the readout reads), since a
    tokenizer that merges ` 7` or `": 7` would put the score inside another token.
    """
    ids = []
    for digit in DIGITS:
        encoded = tokenizer.encode(digit, add_special_tokens=False)
        if len(encoded) != 1:
            raise CardError(
                f"digit {digit!r} is {len(encoded)} tokens {encoded} in this tokenizer; SEE needs one token per digit"
            )
        in_context = tokenizer.encode(f'{{"{ATTRIBUTES[0]}": {digit}', add_special_tokens=False)
        if in_context[-1] != encoded[0]:
            raise CardError(
                f"after '\": ' the digit {digit!r} does not stay a bare token (got {in_context[-3:]}); "
                "this tokenizer cannot carry a per-position score distribution"
            )
        ids.append(encoded[0])
    if len(set(ids)) != len(ids):
        raise CardError(f"digits share token ids {ids}")
    return tuple(ids)


def check_card_against_tokenizer(card: ModelCard, tokenizer: TokenizerLike) -> None:
    actual = digit_token_ids_for(tokenizer)
    if actual != card.digit_token_ids:
        raise CardError(f"card digit ids {list(card.digit_token_ids)} do not match the tokenizer's {list(actual)}")


def card_path(model_dir: str | os.PathLike[str]) -> Path:
    return Path(model_dir) / CARD_FILENAME


def load_card(model_dir: str | os.PathLike[str]) -> ModelCard:
    path = card_path(model_dir)
    if not path.is_file():
        raise CardError(
            f"no {CARD_FILENAME} in {model_dir}: prepare the default model with `see model prepare`, or write a "
            f"card for your checkpoint with `see model card {model_dir} --prompt-mode chat|see-base`"
        )
    return ModelCard.from_dict(read_json_object(path, CardError))


def write_card(model_dir: str | os.PathLike[str], card: ModelCard) -> Path:
    """Write the card atomically (temp file + rename), so a crash never leaves half a card."""
    return write_json_atomic(card_path(model_dir), card.to_dict())
