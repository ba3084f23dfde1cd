# The project's two commands: `make run` and `make test`. Both create the environment if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.synced

.PHONY: venv run test bench lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/pip install --quiet --disable-pip-version-check "uv==0.13.9"
	VIRTUAL_ENV=$(abspath $(VENV)) UV_PROJECT_ENVIRONMENT=$(abspath $(VENV)) $(BIN)/uv sync --frozen --quiet
	touch $(STAMP)

run: venv
	$(BIN)/eventgate serve

bench: venv
	$(BIN)/python bench/run.py --json bench/results.json

lint: venv
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench

test: lint
	$(BIN)/pytest

format: venv
	$(BIN)/ruff check --fix src tests examples bench
	$(BIN)/ruff format src tests examples bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
