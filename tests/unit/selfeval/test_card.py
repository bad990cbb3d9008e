import json

import pytest

from selfeval.card import (
    CardError,
    Lineage,
    ModelCard,
    check_card_against_tokenizer,
    digit_token_ids_for,
    load_card,
    write_card,
)


class CharTokenizer:
    """Each character is its own token (id = code point): digits are single tokens."""

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]


class MergingTokenizer(CharTokenizer):
    """Pretends ' 7'-style merges: a digit after a space fuses with it."""

    def encode(self, text, add_special_tokens=False):
        out, i = [], 0
        while i < len(text):
            if text[i] == " " and i + 1 < len(text) and text[i + 1].isdigit():
                out.append(1000 + int(text[i + 1]))
                i += 2
            else:
                out.append(ord(text[i]))
                i += 1
        return out


class MultiTokenDigits(CharTokenizer):
    def encode(self, text, add_special_tokens=False):
        return [7, 7] if text == "5" else super().encode(text)


def make_card(**overrides):
    fields = dict(
        model_name="m", prompt_mode="chat", digit_token_ids=tuple(range(48, 58)), lineage=Lineage(base_model="base")
    )
    return ModelCard(**{**fields, **overrides})


def test_digit_ids_for_a_single_token_digit_tokenizer():
    assert digit_token_ids_for(CharTokenizer()) == tuple(range(48, 58))


def test_tokenizer_with_multi_token_digits_is_refused():
    with pytest.raises(CardError, match="one token per digit"):
        digit_token_ids_for(MultiTokenDigits())


def test_tokenizer_merging_the_digit_into_the_preceding_space_is_refused():
    with pytest.raises(CardError, match="bare token"):
        digit_token_ids_for(MergingTokenizer())


def test_card_round_trips_through_disk(tmp_path):
    card = make_card()
    write_card(tmp_path, card)
    assert load_card(tmp_path) == card
    check_card_against_tokenizer(card, CharTokenizer())


def test_card_mismatching_the_tokenizer_is_refused():
    with pytest.raises(CardError, match="do not match"):
        check_card_against_tokenizer(make_card(digit_token_ids=tuple(range(10))), CharTokenizer())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prompt_mode": "completion"}, "prompt_mode"),
        ({"digit_token_ids": (1, 2, 3)}, "digit_token_ids"),
        ({"digit_token_ids": (1,) * 10}, "distinct"),
        ({"scale_max": 4}, "0-9"),
    ],
)
def test_invalid_cards_are_refused(overrides, message):
    with pytest.raises(CardError, match=message):
        make_card(**overrides)


def test_missing_card_says_how_to_make_one(tmp_path):
    with pytest.raises(CardError, match="see model card"):
        load_card(tmp_path)


def test_card_of_another_format_is_refused(tmp_path):
    (tmp_path / "see_card.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(CardError, match="not a see-card"):
        load_card(tmp_path)
