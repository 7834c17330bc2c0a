# Two commands after cloning:  `make quickstart` (main job on default data), `make test`.
# Both create .venv on first use, installing the CPU build of torch first (an unpinned
# torch would pull multi-GB CUDA wheels).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
export NLP_SSL_DATA_DIR ?= $(abspath ../shared/data)
export TOKENIZERS_PARALLELISM ?= false

.PHONY: quickstart test format venv bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev,transfer]"
	touch $@

# Main job: the quick-start pipeline (recipes/pipeline/quickstart.yaml): tokenizer (~10 s),
# skip-gram token embeddings (~2 min), masked-LM pretraining from them (~10 min on 2 CPU cores),
# sentiment fine-tuning (~2 min) and a frozen-feature head (~3 min), results table; a second
# run skips what is finished, an interrupted one resumes.
quickstart: venv
	$(BIN)/nlp-ssl pipeline recipes/pipeline/quickstart.yaml

# The style is checked first (ruff, configured in pyproject.toml): `make format` fixes most of it.
test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_tokenizer.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_pretrain.py --objective mlm --steps 150
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_pretrain.py --objective clm --steps 300 --compile

clean:
	rm -rf $(VENV) runs
