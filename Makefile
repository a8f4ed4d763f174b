# fintask: `make demo` runs the showcase, `make test` runs the checks and the test suite.
# Both install what they need on a fresh Debian machine first (`make install`).

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
# uv itself lives in its own small venv, so `uv sync` never removes the tool that runs it.
UV_VERSION := 0.13.9
UV := .tools/bin/uv
PYTEST_ARGS ?=

.PHONY: install system-packages demo dev test test-reliability lint typecheck unit integration bench clean

install: system-packages $(VENV)/.installed

system-packages:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	test -x /usr/lib/rabbitmq/bin/rabbitmq-server || missing="$$missing rabbitmq-server"; \
	command -v redis-sentinel >/dev/null || missing="$$missing redis-sentinel"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing with apt-get"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install -q uv==$(UV_VERSION)

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as in many containers) a venv without .pyc
# files recompiles every import in every new process: 4.1-4.9 s instead of 1.3-1.6 s to import app.broker and actors.
$(VENV)/.installed: pyproject.toml uv.lock $(UV)
	$(UV) sync --frozen --python python3 --compile-bytecode
	@touch $@

demo: install
	$(BIN)/fintask demo $(if $(KEEP),--keep,)

# Development: workers and the scheduler restart when code changes (needs REDIS_URL).
# Unless BLOB_KEYS is set, the processes share the local blob key `fintask run` keeps in var/.
LOCAL_BLOB_KEYS := from app.local.supervisor import local_blob_keys; \
	from app.settings import load_settings; print(local_blob_keys(load_settings().var_dir))
dev: install
	$(BIN)/fintask migrate
	BLOB_KEYS="$${BLOB_KEYS:-$$($(BIN)/python -c '$(LOCAL_BLOB_KEYS)')}" \
		PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho -f Procfile.dev start

# Unit tests are CPU-bound in one process: two pytest-xdist workers use both cores. The tests
# that start real processes run one at a time, so no two of them compete for the same cores.
test: install lint typecheck
	$(BIN)/pytest tests/unit -n 2 $(PYTEST_ARGS)
	$(BIN)/pytest tests/integration tests/browser tests/reliability $(PYTEST_ARGS)

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck:
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit -n 2 $(PYTEST_ARGS)

integration: install
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

# The fault suite: kills, restarts and outages under the Procfile's settings (about 20 minutes);
# `make test` runs its quick cases. docs/reliability.md has the figures it prints.
test-reliability: install
	$(BIN)/pytest tests/reliability -m reliability -s $(PYTEST_ARGS)

# Quick sizes by default (a few minutes on 2 cores); FULL=1 for 10^6 users and 30 s windows.
# arq runs from its own locked venv (bench/peers/arq: arq 0.28 needs redis-py < 6).
bench: install
	$(UV) sync --frozen --python python3 --compile-bytecode --project bench/peers/arq
	$(BIN)/python -m bench $(if $(FULL),--full,) $(if $(PUBLISH),--publish,) $(BENCH_ARGS)

clean:
	rm -rf var .tools .pytest_cache .mypy_cache .ruff_cache
