# The two commands of the README: `make demo` and `make test`. Both create the
# virtual environment and install everything on a fresh machine first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.calstream-installed
PYTEST_ARGS ?=
# `make test` runs three test files at a time (pytest-xdist, whole files per
# worker so a module's daemon run is not split; the longest files first, see
# tests/conftest.py): most integration tests wait on the broker or a timer
# for part of their time: about half of a two-file run was waiting, and three
# took 0.80x the time of two on 2 cores (README.md, "Tests").
# TEST_WORKERS=0 runs them one after another.
TEST_WORKERS ?= 3

.PHONY: install demo test test-fast lint bench bench-full clean tools

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "calstream needs Python 3.11+; set PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/calstream demo

test: $(STAMP) tools
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The inner loop: the unit tests alone (pure logic, no broker, no jwst run).
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# Debian packages the tests use: promtool and a Prometheus server (package
# prometheus) for the operations tests, kcat, a non-Python Kafka client, for
# the subscriber contract test, and chromium (headless) for the console test.
# Installed only as root (no sudo prompt in a test run); otherwise those tests
# skip, and fail under CI=true.
tools:
	@missing=""; \
	{ command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; } || missing="prometheus"; \
	command -v kcat >/dev/null 2>&1 || missing="$$missing kcat"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	{ command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } || missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian package(s) $$missing for the ops, subscriber, console and TLS tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "note: Debian package(s) $$missing missing: the tests that need them will skip (and fail under CI=true)."; \
	  echo "      Install them with: sudo apt-get install --no-install-recommends $$missing"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/bench_detector1.py
	$(BIN)/python bench/bench_planner.py

# Full frame (2048x2048, 10 groups, 4 exposures, 2 interleaved rounds): long
# (tens of minutes on 2 cores); not part of CI. EXPOSURES=6 for more.
bench-full: $(STAMP)
	$(BIN)/python bench/bench_detector1.py --full $(if $(EXPOSURES),--exposures $(EXPOSURES))

clean:
	rm -rf $(VENV) demo-work .pytest_cache build *.egg-info
