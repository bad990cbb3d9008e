from pathlib import Path

import pytest

from selfeval.prompts import (
    CHAT_INSTRUCTION,
    PromptError,
    build_chat_messages,
    build_see_base_prompt,
    render_transcript,
    validate_messages,
)

GOLDEN = Path(__file__).parents[2] / "golden" / "see_base_prompt_two_turns.txt"
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "  Name a prime number.\n"},
    {"role": "assistant", "content": "7 is prime."},
    {"role": "user", "content": "Another one?"},
]


def test_see_base_prompt_matches_the_hand_written_golden_byte_for_byte():
    assert build_see_base_prompt(CONVERSATION) == GOLDEN.read_text(encoding="utf-8")


def test_see_base_prompt_ends_with_the_final_output_label_and_one_newline():
    prompt = build_see_base_prompt([{"role": "user", "content": "hi"}])
    assert prompt.endswith("\n\nReal conversation:\nUser: hi\n\nFinal assistant output:\n")
    assert not prompt.endswith("\n\n")


def test_see_base_prompt_has_six_examples_each_with_a_canonical_block():
    prompt = build_see_base_prompt([{"role": "user", "content": "hi"}])
    for number in range(1, 7):
        assert f"\nExample {number}\nConversation:\nUser: " in prompt
    assert "Example 7" not in prompt
    assert prompt.count('\n[SELF_EVAL]\n{"helpfulness": 8, ') == 6


def test_transcript_strips_contents_and_separates_paragraphs_with_a_blank_line():
    assert render_transcript([{"role": "user", "content": " a "}, {"role": "assistant", "content": "b\n"}]) == (
        "User: a\n\nAssistant: b"
    )


def test_chat_mode_prepends_the_instruction_as_a_system_message():
    messages = build_chat_messages([{"role": "user", "content": "hi"}])
    assert messages == [{"role": "system", "content": CHAT_INSTRUCTION}, {"role": "user", "content": "hi"}]


def test_chat_mode_appends_the_instruction_to_an_existing_system_message():
    messages = build_chat_messages([{"role": "system", "content": "Be brief.  "}, {"role": "user", "content": "hi"}])
    assert messages[0] == {"role": "system", "content": f"Be brief.\n\n{CHAT_INSTRUCTION}"}
    assert len(messages) == 2


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ("hello", "messages"),
        ([{"role": "robot", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": 3}], "messages[0].content"),
        ([{"role": "user", "content": "ok"}, {"role": "user", "content": " \n"}], "messages[1].content"),
        ([["user", "x"]], "messages[0]"),
    ],
)
def test_invalid_conversations_name_the_offending_field(messages, param):
    with pytest.raises(PromptError) as caught:
        validate_messages(messages)
    assert caught.value.param == param
