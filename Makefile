# Every workflow of the book is a target here. `make book` and `make test` set themselves up.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The set-up stamp is named after a hash of what the install reads: setup.py, settings.ini, the book's
# requirements and the packaging sections of pyproject.toml. nbdev_export rewrites pyproject.toml (same
# text, new mtime), so a timestamp rule would reinstall on every target; a content hash reinstalls only
# when an input really changed.
SETUP_HASH := $(shell { cat setup.py settings.ini book/requirements.txt; \
  awk '/^\[/ { keep = ($$0 ~ /^\[(build-system|project)/) } keep' pyproject.toml; } | sha256sum | cut -c1-16)
STAMP  := $(VENV)/.installed-$(SETUP_HASH)

# Data: the prepared TFDS datasets beside the project when present, else TFDS's default folder.
TFDS_DATA_DIR ?= $(if $(wildcard ../shared/tensorflow_datasets),$(abspath ../shared/tensorflow_datasets),$(HOME)/tensorflow_datasets)
export TFDS_DATA_DIR
export PYTHONHASHSEED := 0
# OpenBLAS's idle threads spin ~0.1 s after each product and starve the Numba kernels that follow on a
# small machine (see nbs/00_core, 'Threads'); 4 = sleep at once. Read when NumPy loads.
export OPENBLAS_THREAD_TIMEOUT ?= 4
# No GPU here: run the CUDA kernels in Numba's simulator (a real GPU is used when nvidia-smi finds one).
ifeq ($(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu),)
export NUMBA_ENABLE_CUDASIM ?= 1
endif

NB_TIMEOUT ?= 5400

.PHONY: help setup export sync check test test-all execute book book-check bench clean
help:
	@echo "make book        set up, export the package and render the book site into _book/"
	@echo "make test        set up, check export and twins, run pytest and nbdev_test (quick mode;"
	@echo "                 cells whose dataset is missing are skipped, with a summary line)"
	@echo "make test-all    the same, with the slow cells and slow tests"
	@echo "make data        download and prepare every dataset the book uses (TFDS) into TFDS_DATA_DIR or ~/tensorflow_datasets"
	@echo "make book-check  build the book, then check it in headless Chromium (pages, math, search, links)"
	@echo "make execute     re-run every chapter fully, saving outputs in place"
	@echo "make bench       benchmark tables (needs the bench extra for PyTorch columns)"
	@echo "make sync        sync notebooks with their jupytext twins;  make export: nbdev_export"

setup: $(STAMP)
$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,dist]' -r book/requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

export: setup
	$(BIN)/nbdev_export

sync: setup
	$(BIN)/jupytext --sync nbs/*.ipynb
	$(BIN)/nbdev_export

# Fails when a twin disagrees with its notebook or when nbdev_export would change dl_from_scratch/.
check: setup
	$(BIN)/python tools/check_sync.py

# A notebook cell flagged with a dataset (`#| mnist`) runs when that dataset is prepared in TFDS_DATA_DIR and is
# skipped, with a summary line, when it is not. REQUIRE_DATA=1 (set when the data is ../shared's, as in CI) makes
# such a skip an error. tools/data_cells.py --check fails when a cell that needs a dataset lacks its flag.
REQUIRE_DATA ?= $(if $(filter $(abspath ../shared/tensorflow_datasets),$(abspath $(TFDS_DATA_DIR))),1,)
export REQUIRE_DATA

test: setup check
	$(BIN)/python tools/data_cells.py --check
	$(BIN)/python -m pytest tests/ -q -m "not slow"
	flags="$$($(BIN)/python tools/data_cells.py --flags)"; $(BIN)/nbdev_test --n_workers 2 --timing --flags "$$flags"
	$(BIN)/python tools/data_cells.py --summary

test-all: setup check
	$(BIN)/python tools/data_cells.py --check
	$(BIN)/python -m pytest tests/ -q
	flags="$$($(BIN)/python tools/data_cells.py --flags slow)"; $(BIN)/nbdev_test --n_workers 1 --flags "$$flags" --timing
	$(BIN)/python tools/data_cells.py --summary slow

# Download and prepare every dataset of the book into TFDS_DATA_DIR (needs the network; installs the data extra,
# TensorFlow, which preparing needs and reading does not). Offline it stops at once and says what to do.
.PHONY: data
data: setup
	$(BIN)/python tools/data_prepare.py

execute: setup
	$(BIN)/python tools/execute.py --timeout $(NB_TIMEOUT) $(NBS)
	$(BIN)/jupytext --sync nbs/*.ipynb

book: setup export
	$(BIN)/python tools/render_book.py

# Opens _book/ in headless Chromium (Debian's package, installed here when missing) and checks every page.
book-check: book
	@command -v chromium >/dev/null || { echo "book-check: installing Debian's chromium"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	$(BIN)/python tools/book_check.py --screenshot build/book/screenshot.png

bench: setup
	@$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[bench]' || echo "torch unavailable: PyTorch columns will be skipped"
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf _book _docs _proc .pytest_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
