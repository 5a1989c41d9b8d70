# rewardedit-jax developer commands. `make test` is the one test command (README, CI).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch, pinned for tests (an unpinned torch pulls a multi-GB CUDA build).
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?= --durations=25
# pytest-xdist workers; each test file runs in one worker, so its module fixtures are built once.
# 2 on a 2-core machine: 20 to 23 min for the whole suite (2026-12-04). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

.PHONY: venv install browser test lint format clean demo app

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[all]" "$(TORCH_PIN)"
	touch $@

venv: $(PY)
install: $(VENV)/.installed

# tests/test_app.py drives the app in Debian's headless Chromium (never a browser downloaded at run time):
# installed from Debian's packages where missing, with sudo when not root.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver; }

test: install browser
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

LINT_PATHS := $(wildcard rewardedit_jax tests configs tfds_builders benchmarks launch)

lint: install
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

format: install
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

# The offline end-to-end demo (README): `make demo SEEDS="0 1"` for the multi-seed comparison.
SEEDS ?= 0
DEMO_OUT ?= demo_out
DEMO_ARGS ?=
demo: install
	$(PY) -m rewardedit_jax.demo --out $(DEMO_OUT) --seeds $(SEEDS) $(DEMO_ARGS)

# The editing app (docs/app.md) on the model `make demo` trained.
app: install
	DEMO_OUT=$(DEMO_OUT) $(PY) -m rewardedit_jax.app

clean:
	rm -rf $(VENV) build *.egg-info
