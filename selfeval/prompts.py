"""The SEE prompts: the paper's base-model completion prompt and a chat mode for instruct models.

`see-base` (docs/method.md §1.3) is one plain completion prefix: instruction block, six few-shot examples,
four closing instructions, the real conversation as `Label: content` paragraphs, and a trailing
`Final assistant output:\n`. Training and serving must produce it byte for byte, so it is built here only.
`chat` wraps the conversation for an instruct model's own chat template: the SEE instruction goes into the
system message (appended to the caller's system message when there is one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from selfeval.block import CLOSE_TAG, OPEN_TAG, render_output
from selfeval.rubric import ATTRIBUTE_DEFINITIONS, ATTRIBUTES

ROLES = ("system", "user", "assistant")
ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


class PromptError(ValueError):
    """A conversation that cannot be turned into a prompt; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


BLOCK_TEMPLATE = (
    f"{OPEN_TAG}\n{{" + ", ".join(f'"{attribute}": <integer 0-9>' for attribute in ATTRIBUTES) + f"}}\n{CLOSE_TAG}"
)

SCORING_GUIDE = "Scoring guide:\n" + "\n".join(
    f"- {attribute}: {ATTRIBUTE_DEFINITIONS[attribute]}." for attribute in ATTRIBUTES
)

INSTRUCTION = "\n\n".join(
    [
        "Write the final assistant output for a conversation.",
        "Output requirements:\n"
        "- Write only the final assistant output and do not continue the transcript.\n"
        '- Never write the labels "User:", "Assistant:", "Conversation:" or "Final assistant output:".\n'
        "- First answer the latest user request helpfully and safely.\n"
        "- Then append exactly one self-evaluation block at the very end.\n"
        "- The block must use exactly these tags and keys:\n" + BLOCK_TEMPLATE,
        SCORING_GUIDE,
        "Important:\n"
        "- Use integers only, from 0 to 9.\n"
        "- Do not stop after the answer; always write the self-evaluation block.\n"
        "- An otherwise good answer is invalid if the self-evaluation block is missing.\n"
        f"- The answer before {OPEN_TAG} must be non-empty.\n"
        "- For long writing, summaries, brainstorming or continuations, give a finite answer and then the block.\n"
        f"- Close any fenced code block before {OPEN_TAG}, and never put the block inside a code fence.\n"
        "- If no exact count is requested and you use bullets, use 3-6 distinct, non-repeated bullets.\n"
        "- Do not repeat paragraphs or restate the prompt as a Prompt/Response template unless asked.\n"
        "- Do not draw large ASCII art unless asked; answer ambiguous short prompts briefly in prose.\n"
        "- When asked to continue a story, script or dialogue, continue only that content, "
        "with no prompt labels and no new user turn.\n"
        f"- Write no text after {CLOSE_TAG}.\n"
        f"- The final characters must be {CLOSE_TAG}.",
    ]
)

# (user request, answer, helpfulness, correctness, coherence, complexity, verbosity): docs/method.md §1.3
FEW_SHOT_EXAMPLES: tuple[tuple[str, str, int, int, int, int, int], ...] = (
    ("What is 2 + 2?", "2 + 2 equals 4.", 8, 8, 8, 0, 0),
    (
        "Give me three practical tips to keep an online account secure.",
        "Use a strong, unique password, turn on two-factor authentication, and be wary of links or "
        "attachments that ask you to log in.",
        8,
        8,
        8,
        2,
        2,
    ),
    ("Rewrite this more professionally: I can't make it today.", "I am unable to attend today.", 8, 8, 8, 2, 0),
    (
        "Suggest a few low-effort ways to make a daily-planning app feel calmer.",
        "Show a simple view of today, send gentle reminders, turn off most notifications by default, and "
        "offer a short end-of-day review.",
        8,
        8,
        8,
        2,
        2,
    ),
    (
        "Which fields are useful for storing document records?",
        "Useful fields are title, owner_id, status, version, created_at, updated_at and archived_at.",
        8,
        8,
        8,
        2,
        2,
    ),
    (
        "Maya: Do you think the old observatory is still open?\nLeo: Only one way to find out.\n\n"
        "Continue the dialogue for two more lines.",
        "Maya: Then bring a flashlight; the stairs up there were always dark.\n"
        "Leo: And hope the telescope is still where we left it.",
        8,
        8,
        8,
        2,
        2,
    ),
)

CLOSING_INSTRUCTIONS = (
    "Now write the final assistant output for the real conversation below.\n"
    "Start with the answer itself. Do not write any transcript label.\n"
    f"End with exactly one {OPEN_TAG} block and then stop.\n"
    f"Before stopping, check that your output contains {OPEN_TAG}, one JSON object, and {CLOSE_TAG}."
)

CHAT_INSTRUCTION = "\n\n".join(
    [
        "Answer the user's latest request helpfully and safely. Then, after your answer, append exactly one "
        "self-evaluation block predicting how an expert judge would score your answer, using exactly these "
        "tags and keys:\n" + BLOCK_TEMPLATE,
        SCORING_GUIDE,
        f"Use integers only, from 0 to 9. Write no text after {CLOSE_TAG}.",
    ]
)


def validate_messages(messages: object) -> list[dict[str, str]]:
    """Check a conversation (list of {role, content}); return clean copies or raise PromptError."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise PromptError("messages must be a non-empty list of {role, content} objects", "messages")
    clean = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise PromptError(f"{where} must be an object with role and content", where)
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise PromptError(f"{where}.role must be one of {list(ROLES)}, got {role!r}", f"{where}.role")
        if not isinstance(content, str):
            raise PromptError(f"{where}.content must be a string, got {type(content).__name__}", f"{where}.content")
        if not content.strip():
            raise PromptError(f"{where}.content is empty", f"{where}.content")
        clean.append({"role": role, "content": content})
    return clean


def render_transcript(messages: Sequence[Mapping[str, str]]) -> str:
    """One `Label: content` paragraph per message (content stripped), joined by a blank line."""
    return "\n\n".join(f"{ROLE_LABELS[m['role']]}: {m['content'].strip()}" for m in messages)


def _render_example(number: int, example: tuple[str, str, int, int, int, int, int]) -> str:
    request, answer, *scores = example
    output = render_output(answer, dict(zip(ATTRIBUTES, scores, strict=True)))
    transcript = render_transcript([{"role": "user", "content": request}])
    return f"Example {number}\nConversation:\n{transcript}\n\nFinal assistant output:\n{output}"


EXAMPLES_SECTION = "Examples of the required output pattern:\n" + "\n\n".join(
    _render_example(number, example) for number, example in enumerate(FEW_SHOT_EXAMPLES, start=1)
)


def build_see_base_prompt(messages: Sequence[Mapping[str, str]]) -> str:
    """The paper's plain completion prompt for a conversation (no chat template, no special tokens)."""
    conversation = validate_messages(messages)
    return (
        f"{INSTRUCTION}\n\n{EXAMPLES_SECTION}\n\n{CLOSING_INSTRUCTIONS}\n\n"
        f"Real conversation:\n{render_transcript(conversation)}\n\nFinal assistant output:\n"
    )


def build_chat_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The conversation with the SEE instruction in its system message, ready for a chat template."""
    conversation = validate_messages(messages)
    if conversation[0]["role"] == "system":
        merged = f"{conversation[0]['content'].rstrip()}\n\n{CHAT_INSTRUCTION}"
        return [{"role": "system", "content": merged}, *conversation[1:]]
    return [{"role": "system", "content": CHAT_INSTRUCTION}, *conversation]


def render_prompt(
    messages: Sequence[Mapping[str, str]], mode: str, apply_chat_template: Callable[[list[dict[str, str]]], str]
) -> str:
    """The prompt text for a conversation in a card's prompt mode (the same bytes in serving and training)."""
    if mode == "see-base":
        return build_see_base_prompt(messages)
    if mode == "chat":
        return apply_chat_template(build_chat_messages(messages))
    raise PromptError(f"unknown prompt mode {mode!r}; expected see-base or chat")
