# The two commands: `make run` and `make test`. Everything installs into .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test worker beat lint format check bench-intake bench-dossier clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { $(PYTHON) -m pip install --user -q virtualenv && $(PYTHON) -m virtualenv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

## make run: migrate, operator account, demo data, serve on http://$(HOST):$(PORT) in test mode.
run: install
	COMMS_MODE=test $(BIN)/python manage.py migrate --noinput
	COMMS_MODE=test $(BIN)/python manage.py ensure_operator
	COMMS_MODE=test LOG_LEVEL=$${LOG_LEVEL:-WARNING} $(BIN)/python manage.py seed_demo
	COMMS_MODE=test LOG_FORMAT=$${LOG_FORMAT:-console} HOST=$(HOST) PORT=$(PORT) $(BIN)/python bin/devserver

## make test: the whole suite, on PostgreSQL + Redis when reachable, else the embedded default.
test: install
	$(BIN)/python bin/run-tests $(ARGS)

## make worker: a Celery worker on every agent queue (needs REDIS_URL); QUEUES=voice for one pool.
QUEUES ?= orchestrator,voice,messaging,email,content,remote,webhooks
worker: install
	@test -n "$$REDIS_URL" || { echo "make worker needs REDIS_URL (without it tasks run in-process)"; exit 1; }
	$(BIN)/celery -A comms_platform worker -l INFO -Q $(QUEUES) -c 2

beat: install
	@test -n "$$REDIS_URL" || { echo "make beat needs REDIS_URL"; exit 1; }
	$(BIN)/celery -A comms_platform beat -l INFO --schedule var/celerybeat-schedule

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

check: install
	$(BIN)/python manage.py makemigrations --check --dry-run

bench-intake: install
	$(BIN)/python bench/api_intake.py

## make bench-dossier: contact timeline at 1M records (seeds comms_bench_dossier once).
bench-dossier: install
	$(BIN)/python bench/dossier_timeline.py

clean:
	rm -rf $(VENV) var/db.sqlite3* var/staticfiles
