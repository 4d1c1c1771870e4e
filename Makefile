# The two commands: `make demo` runs the demo, `make test` runs the tests.
# Both create the virtual environment and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install snapshots bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tradeops demo

# Lint, format check and types first (configured in pyproject.toml), then the tests.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# Re-record the UI snapshots (then open the SVGs and look at them before committing).
snapshots: $(STAMP)
	$(BIN)/python -m pytest -q tests/ui --snapshot-update

clean:
	rm -rf $(VENV) *.egg-info
