"""The README's code examples run as written, and every certificate they print certifies every block."""

import contextlib
import io
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.default_xla
@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs(index):
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    exec(compile(EXAMPLES[index], f"README.md example {index}", "exec"), {})
  output = printed.getvalue()
  assert "NOT certified" not in output and "NOT all certified" not in output, output
  if "certify(" in EXAMPLES[index] and ".table()" in EXAMPLES[index]:
    assert "all certified" in output, output


def test_readme_has_examples():
  assert len(EXAMPLES) >= 2
