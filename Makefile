# Two commands (see README.md):
#   make book   build the book into _build/html (executes every chapter)
#   make test   the linter, unit tests, the wheel test, every chapter under nbval, and a book build
#               that checks the book without executing the chapters a second time
# Each creates or updates .venv from requirements.txt and installs prunekit from this checkout.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JB     := $(BIN)/jupyter-book build . -W -n --keep-going

# OpenMP threads that busy-wait between torch ops slow small models down by 10x or more on
# a shared or busy machine; passive waiting costs nothing on an idle one. Kernels started
# by the book build and by nbval inherit it.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: book book-check lint test test-unit test-notebooks bench clean venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

book: $(STAMP)
	$(JB)
	@echo "Book built: open _build/html/index.html"

lint: $(STAMP)
	$(BIN)/ruff check

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests

test-notebooks: $(STAMP)
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider notebooks

# `make test` runs every chapter exactly once, under nbval (with the book's stderr rule, see
# notebooks/conftest.py), then builds the book *without* executing it again: -W -n still
# checks the table of contents, cross-references, citations, maths and the API pages, and
# the test command stays well under 20 minutes. `make book` executes every chapter.
book-check: $(STAMP)
	mkdir -p _build/check
	sed 's/^\(  execute_notebooks:\).*/\1 "off"/' _config.yml > _build/check/_config.yml
	grep -q 'execute_notebooks: "off"' _build/check/_config.yml
	$(BIN)/jupyter-book build . -W -n --keep-going --config _build/check/_config.yml --path-output _build/check

test: lint test-unit test-notebooks book-check

bench: $(STAMP)
	$(BIN)/python benchmarks/masks.py
	$(BIN)/python benchmarks/kmeans.py
	$(BIN)/python benchmarks/structured.py

clean:
	rm -rf _build build dist *.egg-info .pytest_cache .hypothesis
