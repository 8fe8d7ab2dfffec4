# Two commands set everything up on a fresh machine:
#   make demo   install, then edit the default model (the Eiffel Tower moves to Rome)
#   make test   install, then run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.factedit-installed

.PHONY: install demo test test-fast lint bench clean

install: $(STAMP)

# A torch already installed (CUDA or not) is kept: the venv sees system packages and the
# package asks only for a range. Without one, the pinned CPU build is tried first.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "torch==2.13.0" \
		|| $(BIN)/pip install "torch>=2.2,<3"
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/factedit edit apply configs/examples/eiffel.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not real"

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

bench: $(STAMP)
	$(BIN)/python scripts/bench.py

clean:
	rm -rf $(VENV) .test-home .pytest_cache
