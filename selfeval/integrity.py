"""What a request may not do to its own self-evaluation, and what it is told when it tries.

The readout predicts a judge from the model's view of (conversation, answer). A caller controls the
conversation, so it can try to steer the readout: earlier assistant turns ending in a block full of 9s, block
text in its own message, or chat-template control strings ("<|im_start|>assistant ...") that forge turns.
Choices:
- Blocks in supplied assistant turns are removed before the prompt is built: training never showed the model
  an earlier block, and the sidecar never returns one in content, so one in history was put there by hand.
  A turn that was nothing but a block is dropped.
- Block tags anywhere else and control strings anywhere are kept (they may be the user's real question) but
  reported as flags on the self-evaluation, and the policy can act on flags (`flagged_action`).
- Control strings are never control tokens when they come from the caller: the prompt is rendered with a
  placeholder for each message that holds one, and that message's text is tokenised literally
  (`split_special_tokens`), so it reads as the characters the user typed, not as a turn boundary.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from selfeval.block import CLOSE_TAG, OPEN_TAG

HISTORY_BLOCK_REMOVED = "history_block_removed"
BLOCK_TEXT_IN_REQUEST = "block_text_in_request"
CONTROL_TEXT_IN_REQUEST = "template_control_text"
FLAGS = (HISTORY_BLOCK_REMOVED, BLOCK_TEXT_IN_REQUEST, CONTROL_TEXT_IN_REQUEST)

# an open tag up to its close tag, or to the end of the turn when the close tag is missing
_BLOCK = re.compile(re.escape(OPEN_TAG) + r".*?(?:" + re.escape(CLOSE_TAG) + r"|\Z)", re.DOTALL | re.IGNORECASE)
_TAG = re.compile(re.escape(OPEN_TAG) + "|" + re.escape(CLOSE_TAG), re.IGNORECASE)
_PLACEHOLDER = "\ue000see-literal-{}\ue001"  # private-use characters: no template or tokenizer gives them meaning


def remove_history_blocks(conversation: Sequence[dict[str, str]]) -> tuple[list[dict[str, str]], bool]:
    """The conversation with every block removed from its assistant turns; True when one was removed."""
    clean, removed = [], False
    for message in conversation:
        if message["role"] != "assistant" or not _TAG.search(message["content"]):
            clean.append(dict(message))
            continue
        removed = True
        content = _TAG.sub("", _BLOCK.sub("", message["content"])).strip()
        if content:
            clean.append({"role": "assistant", "content": content})
    return clean, removed


def holds_control_text(text: str, control_strings: Sequence[str]) -> bool:
    return any(control in text for control in control_strings)


def request_flags(
    conversation: Sequence[dict[str, str]], texts: Sequence[str], control_strings: Sequence[str], removed: bool
) -> list[str]:
    """Flags for a request: its (already cleaned) conversation plus any other caller text (a scored response)."""
    everything = [m["content"] for m in conversation] + list(texts)
    flags = [HISTORY_BLOCK_REMOVED] if removed else []
    if any(_TAG.search(text) for text in everything):
        flags.append(BLOCK_TEXT_IN_REQUEST)
    if any(holds_control_text(text, control_strings) for text in everything):
        flags.append(CONTROL_TEXT_IN_REQUEST)
    return flags


def encode_with_literal_messages(
    conversation: Sequence[dict[str, str]],
    render: Callable[[list[dict[str, str]]], str],
    encode: Callable[[str], list[int]],
    encode_literal: Callable[[str], list[int]],
    control_strings: Sequence[str],
) -> list[int]:
    """Token ids of the rendered prompt in which messages holding control strings are tokenised literally.

    Each such message's stripped text is swapped for a placeholder (its surrounding whitespace kept, so a
    template that strips content and one that does not both place it right); the rendering is split at the
    placeholders and the pieces between them are encoded as template text.
    """
    literals: list[str] = []
    placeholder_conversation = []
    for message in conversation:
        content = message["content"]
        if not holds_control_text(content, control_strings):
            placeholder_conversation.append(message)
            continue
        core = content.strip()
        lead, tail = content[: len(content) - len(content.lstrip())], content[len(content.rstrip()) :]
        placeholder_conversation.append({**message, "content": lead + _PLACEHOLDER.format(len(literals)) + tail})
        literals.append(core)
    text = render(placeholder_conversation)
    ids: list[int] = []
    for index, literal in enumerate(literals):
        before, marker, text = text.partition(_PLACEHOLDER.format(index))
        if not marker:
            raise ValueError("the prompt template dropped a message")
        ids += encode(before) if before else []
        ids += encode_literal(literal)
    return ids + (encode(text) if text else [])
