# Two commands (see README.md):
#   make book   build the book into _build/html (executes every chapter)
#   make test   unit tests, notebooks under nbval, the wheel test, and the book build
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

.PHONY: book test test-unit test-notebooks bench clean venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

book: $(STAMP)
	$(JB)
	@echo "Book built: open _build/html/index.html"

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests

test-notebooks: $(STAMP)
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider notebooks

test: test-unit test-notebooks
	$(JB)

bench: $(STAMP)
	$(BIN)/python benchmarks/masks.py
	$(BIN)/python benchmarks/kmeans.py
	$(BIN)/python benchmarks/structured.py

clean:
	rm -rf _build build dist *.egg-info .pytest_cache .hypothesis
