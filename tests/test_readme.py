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


@pytest.mark.default_xla
@pytest.mark.parametrize("page,index,code", EXAMPLES,
                         ids=[f"{page.relative_to(ROOT)}:{index}" for page, index, _ in EXAMPLES])
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
