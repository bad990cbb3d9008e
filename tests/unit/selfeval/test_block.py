import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfeval.block import (
    BlockParseError,
    answer_before_block,
    block_suffix,
    forced_segments,
    parse_output,
    partial_tag_suffix_length,
    render_block,
    render_output,
)
from selfeval.rubric import ATTRIBUTES

SCORES = {"helpfulness": 8, "correctness": 7, "coherence": 9, "complexity": 2, "verbosity": 0}
CANONICAL = (
    'Paris.\n\n[SELF_EVAL]\n{"helpfulness": 8, "correctness": 7, "coherence": 9, "complexity": 2, "verbosity": 0}'
    "\n[/SELF_EVAL]"
)


def test_canonical_rendering_is_byte_exact():
    assert render_output("Paris.", SCORES) == CANONICAL


def test_render_refuses_invalid_scores():
    with pytest.raises(ValueError):
        render_block({**SCORES, "verbosity": 10})


def test_parse_returns_answer_scores_and_digit_spans():
    parsed = parse_output(CANONICAL)
    assert parsed.answer == "Paris."
    assert parsed.scores == SCORES
    for attribute, (start, end) in parsed.digit_spans.items():
        assert end == start + 1
        assert CANONICAL[start] == str(SCORES[attribute])
        assert CANONICAL[:start].endswith(f'"{attribute}": ')


def test_parse_accepts_free_whitespace_and_case_insensitive_tags():
    body = '{"helpfulness":8,"correctness":7,"coherence":9,"complexity":2,"verbosity":0}'
    text = f"  Paris.  [self_eval]{body}  [/Self_Eval]\n"
    parsed = parse_output(text)
    assert parsed.answer == "Paris."
    assert parsed.scores == SCORES
    assert text[parsed.digit_spans["coherence"][0]] == "9"


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("Paris.", "tag_count"),
        (CANONICAL + CANONICAL, "tag_count"),
        (CANONICAL + " trailing", "layout"),
        ('Paris. [SELF_EVAL] {"a": {"b": 1}} [/SELF_EVAL]', "layout"),
        (CANONICAL.replace("Paris.", "  "), "empty_answer"),
        (CANONICAL.replace('"verbosity": 0}', '"verbosity": 0,}'), "json"),
        (CANONICAL.replace('"complexity": 2, "verbosity": 0', '"verbosity": 0, "complexity": 2'), "keys"),
        (CANONICAL.replace(', "verbosity": 0', ""), "keys"),
        (CANONICAL.replace('"verbosity": 0', '"verbosity": 0, "extra": 1'), "keys"),
        (CANONICAL.replace('"verbosity": 0', '"verbosity": 10'), "values"),
        (CANONICAL.replace('"verbosity": 0', '"verbosity": 8.0'), "values"),
        (CANONICAL.replace('"verbosity": 0', '"verbosity": "8"'), "values"),
        (CANONICAL.replace('"verbosity": 0', '"verbosity": true'), "values"),
        (CANONICAL.replace('"verbosity": 0', '"verbosity": -0'), "values"),
        (CANONICAL.replace('"verbosity": 0', '"verbosity": -1'), "values"),
    ],
)
def test_parse_names_the_rule_that_failed(text, rule):
    with pytest.raises(BlockParseError) as caught:
        parse_output(text)
    assert caught.value.rule == rule


@given(st.text())
def test_parser_raises_only_its_typed_error_on_arbitrary_text(text):
    # hypothesis reports any other exception as a failure
    with contextlib.suppress(BlockParseError):
        parse_output(text)


@given(
    st.text(min_size=1).filter(
        lambda s: s.strip() and "[self_eval]" not in s.lower() and "[/self_eval]" not in s.lower()
    ),
    st.lists(st.integers(0, 9), min_size=5, max_size=5),
)
def test_render_then_parse_round_trips(answer, values):
    scores = dict(zip(ATTRIBUTES, values, strict=True))
    text = render_output(answer, scores)
    parsed = parse_output(text)
    assert parsed.answer == answer.strip()
    assert parsed.scores == scores
    assert [text[start:end] for start, end in parsed.digit_spans.values()] == [str(v) for v in values]


def test_forced_segments_rebuild_the_canonical_block():
    segments = forced_segments()
    digits = [str(SCORES[a]) for a in ATTRIBUTES]
    rebuilt = "Paris." + "".join(seg + digit for seg, digit in zip(segments, digits, strict=True)) + block_suffix()
    assert rebuilt == CANONICAL
    assert json.loads(rebuilt.split("\n")[3]) == SCORES


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (CANONICAL, "Paris."),
        ('Paris.\n\n[SELF_EVAL]\n{"helpf', "Paris."),
        ("Paris. [SELF_E", "Paris."),
        ("Paris. [", "Paris."),
        ("Paris.", "Paris."),
        ("  ", ""),
    ],
)
def test_answer_before_block_strips_full_and_cut_off_blocks(text, answer):
    assert answer_before_block(text) == answer


@pytest.mark.parametrize(
    ("text", "held"), [("abc", 0), ("abc [", 1), ("abc [SELF_EV", 8), ("abc [self", 5), ("[SELF_EVAL]", 0), ("x]", 0)]
)
def test_partial_tag_suffix_length(text, held):
    assert partial_tag_suffix_length(text) == held


@given(st.text(max_size=60), st.lists(st.integers(1, 7), max_size=20))
def test_streamed_deltas_concatenate_to_the_non_streamed_answer(tail, cuts):
    from selfeval.block import AnswerStream

    text = "  Hello there, [world]  \n" + tail + render_output(" final bit ", SCORES) + tail
    stream, pieces, position = AnswerStream(), [], 0
    for size in cuts + [len(text)]:
        pieces.append(stream.feed(text[position : position + size]))
        position += size
    assert "".join(pieces) == answer_before_block(text)
    assert "[SELF_EVAL" not in "".join(pieces).upper()


def test_stream_holds_back_a_possible_tag_and_releases_it_when_it_is_not_one():
    from selfeval.block import AnswerStream

    stream = AnswerStream()
    assert stream.feed("Use [SEL") == "Use"
    assert stream.feed("F] here") == " [SELF] here"
    assert stream.feed("\n\n[SELF_EVAL]\n{") == ""
    assert stream.closed and stream.answer == "Use [SELF] here"


def test_forced_token_layout_is_the_canonical_block_with_each_digit_one_token():
    from selfeval.block import forced_token_layout, render_output

    vocabulary: dict[str, int] = {}

    def encode(text: str) -> list[int]:  # one token per character: positions are easy to check
        return [vocabulary.setdefault(ch, len(vocabulary)) for ch in text]

    digits = [vocabulary.setdefault(str(d), len(vocabulary)) for d in range(10)]
    scores = {"helpfulness": 7, "correctness": 6, "coherence": 8, "complexity": 3, "verbosity": 2}
    ids, positions = forced_token_layout(encode, "Paris.", [digits[scores[a]] for a in ATTRIBUTES])
    decoded = "".join({v: k for k, v in vocabulary.items()}[i] for i in ids)
    assert decoded + "}\n[/SELF_EVAL]" == render_output("Paris.", scores)
    assert [decoded[p] for p in positions] == [str(scores[a]) for a in ATTRIBUTES]
    assert positions[-1] == len(ids) - 1
