# Set-up is part of each target: a fresh machine needs only Python 3.11+ and make.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test run migrate bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/alertbot demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

run: $(STAMP)
	$(VENV)/bin/alertbot run

migrate: $(STAMP)
	$(VENV)/bin/alertbot migrate

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
