# Everything a fresh machine needs: `make demo` and `make test` create .venv and install first.
# The demo installs effsweep alone; the tests add the dev extras (browser driver, S3 server, schemas).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEV_INSTALLED := $(VENV)/.installed-dev

.PHONY: demo test lint browser clean

$(INSTALLED): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: an unpinned torch would pull several GB of CUDA packages.
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e .
	touch $(INSTALLED)

$(DEV_INSTALLED): $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(DEV_INSTALLED)

# Debian's Chromium for the MLflow UI browser test (Playwright drives the system browser).
browser:
	@command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

demo: $(INSTALLED)
	$(BIN)/effsweep run search_spaces/quick.yaml --output sweeps/demo

test: $(DEV_INSTALLED) browser
	$(BIN)/python -m pytest

lint: $(DEV_INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) sweeps .pytest_cache
