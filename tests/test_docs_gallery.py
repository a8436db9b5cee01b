"""The docs gallery hook (docs/hooks.py) and the landing page."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()

SCRIPT = """\
# %% [markdown]
# # Title
#
# Some *prose*.

# %%
import matplotlib.pyplot as plt

total = sum(range(4))
print("total", total)

# %%
fig, ax = plt.subplots()
ax.plot([0, 1], [total, 0])

# %% [markdown]
# The end.
"""


def test_cells_split_prose_and_code():
    cells = hooks.cells(SCRIPT)
    assert [kind for kind, _ in cells] == ["markdown", "code", "code", "markdown"]
    assert cells[0][1] == "# Title\n\nSome *prose*."
    assert cells[1][1].endswith('print("total", total)')
    assert cells[3][1] == "The end."


def test_render_shows_code_output_and_figures():
    pytest.importorskip("matplotlib")
    rendered = hooks.render(SCRIPT, "demo")
    page = rendered.markdown
    assert page.startswith("# Title\n\nSome *prose*.\n\n```python\nimport matplotlib")
    assert '```text title="output"\ntotal 6\n```' in page
    assert "![figure 1](demo_1.png)" in page and "(demo.py)" in page
    assert len(rendered.figures) == 1
    assert rendered.figures[0].startswith(b"\x89PNG")
    # Cells share one namespace; the figure drawn in cell 2 used cell 1's variable.
    assert page.index("total 6") < page.index("demo_1.png") < page.index("The end.")


def test_a_failing_cell_fails_the_build():
    with pytest.raises(ZeroDivisionError):
        hooks.render("# %%\nx = 1 / 0\n", "broken")


def test_gallery_scripts_are_percent_scripts_with_a_title():
    scripts = sorted((ROOT / "docs" / "gallery").glob("*.py"))
    assert len(scripts) >= 4
    for script in scripts:
        cells = hooks.cells(script.read_text(encoding="utf-8"))
        assert cells[0][0] == "markdown" and cells[0][1].startswith("# "), script.name
        assert any(kind == "code" for kind, _ in cells), script.name


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.M | re.S)


def test_landing_page_example_is_the_readme_example():
    readme_example = _python_blocks(ROOT / "README.md")[0]
    assert _python_blocks(ROOT / "docs" / "index.md")[0] == readme_example
