"""The code examples of the README and of the documentation's guide pages run as written, and every
certificate they print certifies every block."""

import contextlib
import io
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "docs" / "getting_started.md", *sorted((ROOT / "docs" / "guide").glob("*.md"))]
EXAMPLES = [(page, index, code) for page in PAGES
            for index, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))]


# A user's first programs (the README's and the getting-started page's) run under XLA's default settings, in
# make test's second pass; the guide pages' examples in the first, with the suite's fast compiles (the
# second pass already covers default code generation with the README, exact log-probs and round trips).
FIRST_PROGRAMS = (ROOT / "README.md", ROOT / "docs" / "getting_started.md")


@pytest.mark.parametrize("page,index,code", [
    pytest.param(page, index, code, id=f"{page.relative_to(ROOT)}:{index}",
                 marks=[pytest.mark.default_xla] if page in FIRST_PROGRAMS else [])
    for page, index, code in EXAMPLES])
def test_documented_example_runs(page, index, code):
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    exec(compile(code, f"{page.relative_to(ROOT)} example {index}", "exec"), {})
  output = printed.getvalue()
  assert "NOT certified" not in output and "NOT all certified" not in output, output
  if "certify(" in code and ".table()" in code:
    assert "all certified" in output, output


def test_readme_and_guide_have_examples():
  assert sum(page.name == "README.md" for page, _, _ in EXAMPLES) >= 1
  assert {page.stem for page, _, _ in EXAMPLES} >= {"README", "getting_started", "distributions", "core", "models",
                                                    "certification", "estimators"}
