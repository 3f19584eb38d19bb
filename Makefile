# chatsite: `make run` serves the site, `make test` runs every test.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# The tests talk to real PostgreSQL and Redis; override to point elsewhere.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/chatsite
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help run test llama browser-deps lint format typecheck lock migrate cluster cluster-down bench bench-sweep bench-soak clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/activate
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/activate
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(VENV)/.installed $@

migrate: $(VENV)/.installed ## apply database migrations
	$(BIN)/python manage.py migrate --noinput

run: $(VENV)/.installed ## set up and serve the site on http://127.0.0.1:8000 (PORT=8001 for another port)
	@$(BIN)/python -m chatsite.portcheck $(HOST) $(PORT)
	@# the server refuses a public secret key with DEBUG off: give .env a generated one
	$(BIN)/python -m chatsite.secretkey
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v 0
	@echo
	@echo "  chatsite is starting on http://$(HOST):$(PORT)/"
	@echo "  1. Open http://$(HOST):$(PORT)/accounts/signup/ and create an account."
	@echo "  2. Without OPENAI_API_KEY the offline demo model answers. For a real model,"
	@echo "     copy .env.example to .env and set OPENAI_API_KEY (and OPENAI_BASE_URL for"
	@echo "     llama.cpp, Ollama, vLLM...), CHAT_MODELS and DEFAULT_CHAT_MODEL."
	@echo "  3. Staff: $(BIN)/python manage.py createsuperuser, then /admin/."
	@echo
	$(BIN)/daphne -b $(HOST) -p $(PORT) chatsite.asgi:application

# Debian packages the tests use: chromium (browser tests), gettext (the translation
# catalogue test runs makemessages), a CJK font (the demo picture's Chinese banner).
browser-deps:
	@{ command -v chromium && command -v xgettext && fc-list | grep -qi wqy; } >/dev/null 2>&1 || \
	  { echo "installing Debian's chromium, gettext and fonts-wqy-microhei"; \
	  (apt-get update -qq && apt-get install -y -qq chromium gettext fonts-wqy-microhei) >/dev/null || \
	  { echo "could not install them (need root or: sudo apt-get install chromium gettext fonts-wqy-microhei)"; exit 1; }; }

llama: ## the real model server the tests use (deploy/llama-setup.sh; ~15 min the first time)
	bash deploy/llama-setup.sh >/dev/null

test: $(VENV)/.installed-dev browser-deps llama ## run every test (unit, consumer, e2e, browser, real model server)
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
	  $(BIN)/python -m pytest -m "not browser" -q $(PYTEST_ARGS)
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
	  DJANGO_ALLOW_ASYNC_UNSAFE=true $(BIN)/python -m pytest -m browser -q -p no:asyncio $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(VENV)/.installed-dev ## mypy on services, selectors, gateways, consumers
	$(BIN)/mypy

# pip's config here may add local wheel folders; the lock must name only what the
# public index serves, so it is compiled without them.
LOCK := env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(BIN)/pip-compile -q --generate-hashes --allow-unsafe --strip-extras
lock: $(VENV)/.installed-dev ## compile requirements*.in into hash-pinned requirements*.txt
	$(LOCK) -o requirements.txt requirements.in
	$(LOCK) -o requirements-dev.txt requirements-dev.in

cluster: $(VENV)/.installed ## nginx on :8080 balancing CLUSTER_PROCS (2) daphne processes
	$(BIN)/python deploy/cluster.py start --procs $${CLUSTER_PROCS:-2}

cluster-down: ## stop the local cluster
	$(BIN)/python deploy/cluster.py stop

bench: $(VENV)/.installed-dev ## every benchmark (bench/README.md); results in bench/results/
	$(BIN)/python bench/stream_sweep.py
	$(BIN)/python bench/stream_sweep.py --cluster 1 --levels 50,100,200
	$(BIN)/python bench/stream_sweep.py --cluster 2 --levels 50,100,200
	$(BIN)/python bench/direct_sdk.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/upload_throughput.py --mb 50 --runs 3

bench-sweep: $(VENV)/.installed-dev ## the streaming sweep against one daphne process
	$(BIN)/python bench/stream_sweep.py

bench-soak: $(VENV)/.installed-dev ## the 10-minute soak (SOAK_MINUTES to shorten)
	$(BIN)/python bench/soak.py --minutes $${SOAK_MINUTES:-10}

clean: ## remove the virtualenv, the SQLite file and collected static files
	rm -rf $(VENV) db.sqlite3* staticfiles
