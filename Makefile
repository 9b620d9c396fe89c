# Quick start: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv with the tested versions (constraints.txt) on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo docs bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all,test,docs]"
	touch $(STAMP)

# Two passes: the suite with XLA:CPU set to compile fast (tests/conftest.py), then the tests marked
# default_xla (README examples, exact log-probs, round trips, the Monotone solve, a resumed run)
# under XLA's default settings, the code users' programs get.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist worksteal --durations=25 -m "not default_xla"
	IRESFLOW_TEST_XLA_OPT=1 $(PY) -m pytest -n 2 --dist worksteal --durations=10 -m default_xla

demo: $(STAMP)
	$(PY) experiments/demo.py

# The documentation site (Sphinx + MyST; tutorials executed), warnings as errors: docs/_build/html/index.html
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

# Side by side with normflows (PyTorch) on this machine; results into docs/ (up to an hour on 2 cores:
# vs_normflows.py took 15 and 42 min on two machines, largest_batch.py ~18 min).
bench: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[bench]"
	$(PY) benchmarks/vs_normflows.py --output-dir docs
	$(PY) benchmarks/memory.py --docs-dir docs
	$(PY) benchmarks/largest_batch.py --docs-dir docs
	$(PY) benchmarks/vs_flowjax.py --docs-dir docs

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache docs/_build docs/jupyter_execute
