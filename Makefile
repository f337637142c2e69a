# linkwatch: `make run` for the demo, `make test` for the suite. Every target installs what it needs.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install compile clean-compiled compiler browser deploy-tools run test unit integration lint typecheck deploy-check bench bench-quick bench-instructions valgrind eval clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The stateful core (validation, aliases, the rolling graph, the rule) compiled in place with
# mypyc: the same typed source, about a quarter less CPU per report (README, "Performance").
# A compiled module is imported before its source, so graph/__init__.py refuses to import
# one older than its source; `make clean-compiled` goes back to running the source.
# The compiled modules are the ones whose first line says so.
COMPILED := $(shell grep -l '^\# mypyc: compiled' graph/*.py)
COMPILE_STAMP := graph/.compiled

compile: $(COMPILE_STAMP)

$(COMPILE_STAMP): $(STAMP) $(COMPILED) | compiler
	mkdir -p build
	$(BIN)/mypyc $(COMPILED) >build/mypyc.log 2>&1 || { tail -40 build/mypyc.log; exit 1; }
	touch graph/*.so  # setuptools keeps an unchanged module's old time when it copies it
	touch $@

compiler:
	@command -v gcc >/dev/null || { \
	  echo "installing Debian's gcc to compile the stateful core"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc >/dev/null; }

clean-compiled:
	rm -f graph/*.so ./*__mypyc*.so $(COMPILE_STAMP)

run: install compile
	$(BIN)/linkwatch run --demo

test: install compile browser deploy-tools lint typecheck
	$(BIN)/pytest tests

# The console test drives Debian's Chromium (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the console test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The deploy tests validate deploy/docker-compose.yaml with Debian's docker-compose (v1),
# which needs no Docker engine for `config`.
deploy-tools:
	@command -v docker-compose >/dev/null || { \
	  echo "installing Debian's docker-compose for the deploy tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; }

unit: install compile
	$(BIN)/pytest tests/unit

integration: install compile
	$(BIN)/pytest tests/integration

lint: install
	$(BIN)/ruff check streams agents graph tests
	$(BIN)/ruff format --check streams agents graph tests

typecheck: install
	$(BIN)/mypy

deploy-check: install deploy-tools
	$(BIN)/pytest -m deploy tests/deploy

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) compile
	$(BIN)/python -m streams.bench

# Instructions per report of each stage, counted by Valgrind: unlike a timing, the same
# from run to run on a noisy machine (streams/stagecost.py; README, "Performance").
bench-instructions: install compile valgrind
	$(BIN)/python -m streams.stagecost

valgrind:
	@command -v valgrind >/dev/null || { \
	  echo "installing Debian's valgrind to count instructions"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }

eval: install compile
	$(BIN)/python -m streams.evaluate

bench-quick: $(BENCH_STAMP) compile
	$(BIN)/python -m streams.bench --reports 30000 --latency-cases 50 --replay-lines 200000 \
	  --curve 100000,300000,1000000 --out bench/result-quick.json --plot bench/throughput-memory-quick.png

clean: clean-compiled
	rm -rf $(VENV) .linkwatch .pytest_cache .mypy_cache .ruff_cache
