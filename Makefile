# One command each: `make demo` (the installation end to end on the embedded
# default) and `make test` (everything the tests need, then the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BASE := $(VENV)/.installed-base
DEV := $(VENV)/.installed-dev
# The CPU build of PyTorch for tests and the tiny diffusion model. On this
# project's machines this exact version comes from local disk; a GPU machine
# installs its CUDA build instead (see README, "GPU engine machine").
TORCH ?= torch==2.13.0

.PHONY: demo test lint bench setup clean

$(BASE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# tinysoundfont declares PyAudio, which we never use and which needs the
	# PortAudio headers to build; install it alone, without its dependencies.
	$(BIN)/pip install -q --no-deps "tinysoundfont>=0.3.7"
	# the room extras too (sound card, live MIDI, OSC), so `make demo` plays out loud
	$(BIN)/pip install -q -e ".[room]"
	touch $(BASE)

$(DEV): $(BASE)
	$(BIN)/pip install -q "$(TORCH)"
	# every extra: the tests exercise MIDI, OSC, playback, diffusion and the encoders
	# ray: the loopback test of engine.backend = "ray" (issue 19) runs in make test
	$(BIN)/pip install -q -e ".[room,test,lint,diffusion,encoders,ray]"
	touch $(DEV)

setup: $(DEV)

demo: $(BASE)
	$(BIN)/art2mus demo

# Two workers (CI has two cores; about 10 min instead of 15 on one), each test file whole on
# one worker: a module's fixtures are built once, and a file's fixed ports never meet
# themselves. One file alone: `.venv/bin/python -m pytest -q tests/FILE` (one process).
test: $(DEV)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/mypy ground installation engine capture audio_out training

bench: $(BASE)
	$(BIN)/art2mus bench generator
	$(BIN)/art2mus bench audio --hours 1

clean:
	rm -rf $(VENV) out
