# Two commands on a fresh machine:
#   make serve   installs buzz in .venv and runs it on the embedded default (SQLite in ./buzz-data)
#   make test    installs buzz with its test tools, then runs the lint and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
NPM    ?= npm
# The real Claude Code CLI for the end-to-end test, from npm into a project-local, ignored folder.
CLAUDE_CODE_VERSION ?= 2.1.197
NODE_TOOLS := .ci/node-tools

.PHONY: install install-test serve test lint bench bench-instructions clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements.lock pyproject.toml
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.lock
	$(BIN)/python -m pip install --quiet -r requirements-test.lock
	touch $@

install: $(VENV)/.installed

$(VENV)/.claude-code-$(CLAUDE_CODE_VERSION): $(BIN)/python
	$(NPM) install --prefix $(NODE_TOOLS) --save-exact --no-audit --no-fund --loglevel=error \
		@anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)
	$(NODE_TOOLS)/node_modules/.bin/claude --version
	touch $@

install-test: $(VENV)/.installed-test $(VENV)/.claude-code-$(CLAUDE_CODE_VERSION)

serve: install
	$(BIN)/buzz serve

# The lint runs first: a change that fails it cannot pass `make test`.
test: lint
	$(BIN)/python -m pytest

lint: install-test
	$(BIN)/ruff check src fakes tests bench
	$(BIN)/ruff format --check src fakes tests bench
	$(BIN)/mypy

bench: install-test
	$(BIN)/python bench/run.py

# Instructions per request under valgrind's callgrind: a figure the machine's load does not move.
bench-instructions: install-test
	$(BIN)/python bench/instructions.py

clean:
	rm -rf $(VENV) $(NODE_TOOLS)
