"""The documentation site builds with warnings as errors, its tutorials executed at a tiny size."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_site_builds_with_every_tutorial_executed(tmp_path):
  pytest.importorskip("sphinx")
  pytest.importorskip("myst_nb")
  out = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs",
                        str(tmp_path / "html")], cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "IRESFLOW_DOCS_TINY": "1", "PYTHONPATH": str(ROOT)})
  assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
  html = tmp_path / "html"
  for page in ("index.html", "getting_started.html", "api/core.html", "api/top_level.html",
               "guide/distributions.html", "design_notes.html", "results.html"):
    assert (html / page).exists(), page
  for tutorial in ("fit_a_density", "conditional_flows", "variational_inference"):
    text = (html / "tutorials" / f"{tutorial}.html").read_text()
    assert "Traceback" not in text, tutorial
  # The API reference documents the public names from their docstrings.
  api = (html / "api" / "top_level.html").read_text()
  for name in ("FlowDistribution", "fit_variational", "certify"):
    assert name in api, name
  # The recipes guide includes the search's ablation table from mnist_search.md (between its markers).
  recipes = (html / "guide" / "mnist_recipes.html").read_text()
  assert "neumann gradient" in recipes and "ablation table" not in recipes
  results = (html / "results.html").read_text()  # and results.md the best trial per model
  assert "first-round trials run" in results and "best per model" not in results
  assert "all certified" in (html / "tutorials" / "fit_a_density.html").read_text()  # the certificate cell ran
