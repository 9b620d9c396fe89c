# Quick start: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv with the tested versions (constraints.txt) on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2

demo: $(STAMP)
	$(PY) experiments/demo.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
