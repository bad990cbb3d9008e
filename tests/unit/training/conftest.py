import pytest


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from selfeval.models import prepare_default_model

    return AutoTokenizer.from_pretrained(prepare_default_model(report=print))
