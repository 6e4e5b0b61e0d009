# Every target creates the virtualenv and installs what it needs, so a fresh clone needs only
# `make run` or `make test`. The stamp file re-installs when pyproject.toml or the pins change.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint format typecheck pytest fuzz clean bench-upload bench-fanout bench bench-peers \
	bench-swap bench-registry bench-profile wrk

# Every first-party package that exists; a package added later is checked without editing this.
PACKAGES := $(patsubst %/__init__.py,%,$(wildcard $(addsuffix /__init__.py,registry serving berth safety migrations)))

# A package that appears (a merge, a new checkout) re-installs too: the editable install maps
# top-level packages when it runs, so one added later would not import.
$(STAMP): pyproject.toml constraints.txt $(addsuffix /__init__.py,$(PACKAGES))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/berth up

test: lint typecheck pytest

pytest: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy $(PACKAGES)

# Not part of `make test`: needs the Postgres server at BERTH_TEST_DATABASE_URL and ~1 GB of RAM.
bench-upload: $(STAMP)
	$(BIN)/python bench/upload_memory.py

# Benchmarks of issue 6, not part of `make test`: each prints its table and targets and writes
# bench/results/<name>-<timestamp>.json and <name>-latest.json. wrk comes from Debian; the
# Flask baseline, MLflow, MLServer and py-spy get virtualenvs of their own under bench/.venvs/.
# BENCH_ARGS passes options through, e.g. `make bench BENCH_ARGS=--quick`.
BENCH_ARGS ?=

wrk:
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)

bench: $(STAMP) wrk
	$(BIN)/python bench/predict.py $(BENCH_ARGS)

bench-peers: $(STAMP) wrk
	$(BIN)/python bench/predict.py --peers --name predict-peers $(BENCH_ARGS)

# Needs the Postgres server at BERTH_TEST_DATABASE_URL (a scratch database is created and dropped).
bench-swap: $(STAMP)
	$(BIN)/python bench/swap.py $(BENCH_ARGS)

bench-registry: $(STAMP)
	$(BIN)/python bench/registry_scale.py $(BENCH_ARGS)

bench-profile: $(STAMP) wrk
	$(BIN)/python bench/profile_serving.py $(BENCH_ARGS)

# Not part of `make test`: 2 registry and 20 serving processes on a fresh Postgres database
# (~4 GB of RAM, a few minutes); a promotion's fan-out p50/p99 and the database's connection
# count at 2, 10 and 20 serving processes, into bench/results/fanout.json.
bench-fanout: $(STAMP)
	$(BIN)/python bench/fanout.py

# Not part of `make test`: schema fuzzing of both apps, in-process, fixed seed, ~6,000 cases
# (about a minute); prints the counts and fails on any server error, off-schema answer or
# authentication bypass. `make test` runs a short version (tests/security/test_fuzz.py).
fuzz: $(STAMP)
	$(BIN)/python -m tests.security.fuzzing --examples 60 --min-cases 3000 \
		--json bench/results/fuzz-latest.json

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
