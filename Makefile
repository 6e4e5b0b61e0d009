# Every target creates the virtualenv and installs what it needs, so a fresh clone needs only
# `make run` or `make test`. The stamp file re-installs when pyproject.toml or the pins change.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint format typecheck pytest clean

$(STAMP): pyproject.toml constraints.txt
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

# The packages pyproject lists, minus those not written yet (mypy stops at a missing one).
PACKAGES := $(foreach p,registry serving berth migrations safety,$(if $(wildcard $(p)/__init__.py),$(p)))

typecheck: $(STAMP)
	$(BIN)/mypy $(addprefix -p ,$(PACKAGES))

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
