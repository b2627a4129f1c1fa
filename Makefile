# One command each: `make demo` (the installation end to end on the embedded
# default) and `make test` (everything the tests need, then the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# tinysoundfont declares PyAudio, which we never use and which needs the
	# PortAudio headers to build; install it alone, without its dependencies.
	$(BIN)/pip install -q --no-deps "tinysoundfont>=0.3.7"
	$(BIN)/pip install -q -e ".[test,lint]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/art2mus demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy installation engine capture audio_out

bench: $(STAMP)
	$(BIN)/art2mus bench engine --json

clean:
	rm -rf $(VENV) out
