# Two commands do all set-up on a fresh machine (see README.md):
#   make demo   napari with the plugin docked on the bundled sample RAW
#               (headless machines: the same compression from the command line)
#   make test   the test suite, GUI tests included (under Xvfb when there is no display)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: demo test venv lint benchmarks clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

venv: $(BIN)/activate
	$(PY) -m pip install -q -e ".[testing]"

demo: venv
	bash scripts/system-deps.sh
	$(BIN)/napari-svd-compress demo --out demo-output

test: venv
	bash scripts/system-deps.sh
	$(BIN)/ruff check src tests benchmarks scripts conformance
	$(BIN)/ruff format --check src tests benchmarks scripts conformance
	bash scripts/run-tests.sh $(PY)

benchmarks: venv
	@echo "see benchmarks/README.md: each script takes a folder or photo and writes into docs/"

clean:
	rm -rf $(VENV) demo-output build *.egg-info
