# Everything a newcomer needs: `make demo` and `make test`. Each target creates or
# refreshes .venv itself from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test coverage bench lint proof clean venv deb

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
	  { echo "hems-agent needs Python 3.11 or newer (found: $$($(PYTHON) --version 2>&1))."; \
	    echo "On Debian / Raspberry Pi OS: sudo apt-get install python3"; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || \
	  { echo "Python's venv module is missing."; \
	    echo "On Debian / Raspberry Pi OS: sudo apt-get install python3-venv"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,demo,cloud]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hems-agent demo $(DEMO_ARGS)

# Three workers (pytest-xdist) on two cores: the end-to-end tests mostly wait on simulated time
# and subprocesses (1,279 tests on this 2-core machine: 179 s of pytest on two workers, 137 s on
# three). Tests pick free ports and their own tmp_path, so workers share nothing.
# TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 3
test: $(STAMP)
	$(PY) -m pytest -q -m "not proof" -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# Line and branch coverage of agent/, drivers/ and policy/ in the test processes (the daemon and
# demo subprocesses the end-to-end tests start are not counted): docs/results.md.
coverage: $(STAMP)
	$(PY) -m pytest -q -m "not proof" -n $(TEST_WORKERS) --dist worksteal \
	  --cov=agent --cov=drivers --cov=policy --cov-branch --cov-report=term $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check agent drivers policy tests bench
	$(VENV)/bin/mypy
	$(PY) -m pytest -q tests/unit/test_layers.py

bench: $(STAMP)
	$(PY) -m bench

proof: $(STAMP)
	$(PY) -m pytest -q -m proof tests/proof

# Debian packages for Raspberry Pi OS 64-bit (arm64) and amd64, in dist/: see docs/operations.md.
# Build dependencies (installed with apt-get when missing): python3 and python3-venv (pip fetches
# the target's wheels), dpkg (dpkg-deb), gzip, git (the changelog's revision), lintian.
DEB_ARCHES ?= arm64 amd64

deb:
	@missing=""; \
	command -v python3 >/dev/null 2>&1 || missing="$$missing python3"; \
	python3 -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v dpkg-deb >/dev/null 2>&1 || missing="$$missing dpkg"; \
	command -v gzip >/dev/null 2>&1 || missing="$$missing gzip"; \
	command -v git >/dev/null 2>&1 || missing="$$missing git"; \
	command -v lintian >/dev/null 2>&1 || missing="$$missing lintian"; \
	if [ -n "$$missing" ]; then \
	  echo "installing build dependencies:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@for arch in $(DEB_ARCHES); do DEB_LINTIAN=yes packaging/build-deb.sh $$arch dist || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
