# The two commands a new user needs:
#   make run    start the gateway with embedded defaults (private Redis, reference exchange)
#   make test   run the whole test suite
# Both create .venv and install what is missing on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck check proto bench bench-smoke clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/pretrade-gateway serve $(ARGS)

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check gateway tests scripts
	$(BIN)/ruff format --check gateway tests scripts

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

# The benchmark suite (bench/README.md): a full run writes bench/results/latest.{json,md}
# and latency.png; the smoke run (seconds, sizes tiny) writes to bench/results/smoke/.
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-smoke: $(STAMP)
	$(BIN)/python -m bench.run --smoke $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
