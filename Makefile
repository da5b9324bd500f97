# Two commands do all set-up on a fresh machine (Python 3.11 needed: every bpy wheel requires it):
#   make demo   — create .venv, install everything, run the pipeline on the embedded default
#   make test   — create .venv, install everything, lint and run the test suite
#   make rehearsal — the paper preset end to end on this machine with stand-in weights (the test suite runs it too)
# The virtual environment is (re)installed only when pyproject.toml or constraints.txt change.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= --durations=25

.PHONY: install browser demo rehearsal cluster-demo test test-all lint format s3-up s3-down ray-up ray-down clean gpu-wheels

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11 (bpy needs it) or pass PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (a few minutes the first time; log in $(VENV)/install.log)"
	@$(BIN)/python -m pip install --disable-pip-version-check -c constraints.txt -e '.[dev]' >$(VENV)/install.log 2>&1 \
		|| { grep -v 'is ignored: it is neither' $(VENV)/install.log | tail -40; echo "error: install failed (full log: $(VENV)/install.log)"; exit 1; }
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m infra.run_all --config local

rehearsal: $(STAMP)
	$(BIN)/python -m infra.rehearsal --out out/rehearsal

# Debian's Chromium, for the test that opens the dataset report in a headless browser (root installs it with apt;
# elsewhere that test is skipped, except under CI).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { echo "installing chromium (apt)"; apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "note: chromium not installed (needs root and apt-get); the report's browser test will be skipped"; }

test: $(STAMP) lint browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: $(STAMP) lint browser
	$(BIN)/python -m pytest -m '' $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

s3-up: $(STAMP)
	@$(BIN)/python -m infra.local_s3 start --dir .s3data --bucket invs

s3-down: $(STAMP)
	$(BIN)/python -m infra.local_s3 stop --dir .s3data

cluster-demo: $(STAMP)
	$(BIN)/python -m infra.cluster_demo

ray-up: $(STAMP)
	$(BIN)/python -m infra.local_ray up

ray-down: $(STAMP)
	$(BIN)/python -m infra.local_ray down

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis out .s3data

# Wheels bench/gpu.sh installs on a GPU machine without network (it has torch, transformers and accelerate).
gpu-wheels: $(STAMP)
	$(BIN)/python -m pip download --no-deps --only-binary=:all: -d bench/wheels -c constraints.txt \
		diffusers torchmetrics lightning-utilities
