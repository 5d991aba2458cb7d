# Two commands (see README.md):
#   make book   build the book into _build/html (executes every chapter)
#   make test   the linter, unit tests, the wheel test, every chapter under nbval, a book build
#               from the outputs nbval produced (no chapter runs twice), and that build opened
#               in headless Chromium (tests/browser)
# Also: make pdf (the book as a PDF, XeLaTeX), make test-browser BOOK_HTML=_build/html.
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

.PHONY: book book-check lint format-notebooks preview test test-unit test-notebooks test-browser browser-deps pdf pdf-deps bench clean venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

book: $(STAMP)
	$(JB)
	@echo "Book built: open _build/html/index.html"

# The package, tests and tools at 120 characters; the chapters at 88 (notebooks/ruff.toml),
# formatted by ruff so that no code line is wider than the book's column.
lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff format --check notebooks

format-notebooks: $(STAMP)
	$(BIN)/ruff format notebooks
	$(BIN)/ruff check --fix notebooks

# One chapter executed in a full build of the book, its page checked in the browser and
# screenshotted (tools/preview.py): make preview NB=notebooks/03_kmeans.ipynb
preview: $(STAMP)
	$(BIN)/python tools/preview.py $(NB)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/browser

test-notebooks: $(STAMP)
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider notebooks

# `make test` runs every chapter exactly once, under nbval (with the book's stderr rule, see
# notebooks/conftest.py), which also writes the executed notebooks to _build/executed/.
# book-check lays those in for the committed ones (tools/book_tree.py: execution off,
# refuses a missing or stale copy) and builds that tree with -W -n into _build/check: table
# of contents, cross-references, citations, maths, API pages, and every output and figure
# the chapters produced, without executing anything a second time. `make book` executes.
CHECK_HTML := _build/check/_build/html

book-check: $(STAMP)
	$(BIN)/python tools/book_tree.py --executed _build/executed --out _build/checktree
	$(BIN)/jupyter-book build _build/checktree -W -n --keep-going --path-output _build/check

# The real-browser test of a built book (default: the book check's build). Installs Debian's
# chromium + chromium-driver first if they are missing (tools/install-browser.sh; root/sudo).
# BOOK_ENFORCE picks the checks that fail it (tests/browser/test_pages.py); screenshots of
# every page at 1,400 and 390 px go to _build/screenshots, the full report to
# _build/browser-report.json.
BOOK_HTML ?= $(CHECK_HTML)
browser-deps:
	sh tools/install-browser.sh

test-browser: $(STAMP) browser-deps
	BOOK_HTML=$(BOOK_HTML) BOOK_SCREENSHOTS=_build/screenshots BOOK_REPORT=_build/browser-report.json \
	  $(BIN)/python -m pytest tests/browser -p no:cacheprovider

test: lint test-unit test-notebooks book-check test-browser

# The book as a PDF (Jupyter Book's LaTeX builder, XeLaTeX; Debian's TeX Live installed by
# tools/install-pdf-deps.sh). When `make test` left fresh executed notebooks, the PDF is
# built from them (nothing runs again); otherwise the chapters are executed as for
# `make book`. Result: _build/book.pdf. Not part of `make test`.
pdf-deps:
	sh tools/install-pdf-deps.sh

pdf: $(STAMP) pdf-deps
	if $(BIN)/python tools/book_tree.py --executed _build/executed --out _build/pdftree; \
	then src=_build/pdftree; else src=.; echo "pdf: executing the chapters"; fi; \
	$(BIN)/jupyter-book build $$src --builder pdflatex --keep-going --path-output _build/pdf
	cp _build/pdf/_build/latex/book.pdf _build/book.pdf
	@echo "PDF built: _build/book.pdf"

bench: $(STAMP)
	$(BIN)/python benchmarks/masks.py
	$(BIN)/python benchmarks/kmeans.py
	$(BIN)/python benchmarks/structured.py

clean:
	rm -rf _build build dist *.egg-info .pytest_cache .hypothesis
