# Set-up is part of each target: a fresh machine needs only Python 3.11+ and make.
# Dependencies come pinned from requirements-dev.lock (tested versions); `make lock` renews both locks.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint run migrate lock clean

$(STAMP): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements-dev.lock
	$(VENV)/bin/python -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/alertbot demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

# What CI runs before the tests: the linter, the formatter's check and the type checker.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

run: $(STAMP)
	$(VENV)/bin/alertbot run

migrate: $(STAMP)
	$(VENV)/bin/alertbot migrate

# Production pins (the Docker image) and development pins (demo, tests), for Python 3.11 on any platform.
lock: $(STAMP)
	$(VENV)/bin/python -m pip install -q uv
	$(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 -q -o requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 -q --extra dev -o requirements-dev.lock

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
