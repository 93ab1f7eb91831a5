# The two setup commands (README): `make demo` runs the main job, `make test` runs the whole suite.
# Both create .venv and install everything from the package index on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pmirs-installed

# Offline, no telemetry: nothing may download weights or phone home at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export FLWR_TELEMETRY_ENABLED := 0
export ANONYMIZED_TELEMETRY := False
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# torch first, by exact pin: it resolves to the CPU build on local disk.
	$(BIN)/pip install torch==2.13.0
	CMAKE_ARGS=-DGGML_NATIVE=OFF $(BIN)/pip install -e '.[dev]'
	$(BIN)/pip check
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pmirs demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
