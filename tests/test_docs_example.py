"""The worked example of docs/examples.md: its code matches the script, which runs."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "examples" / "synth_dev_example.py"
PAGE = ROOT / "docs" / "examples.md"


def _script_cells() -> list[str]:
    """Code of the script's ``# %%`` cells (the module docstring before them dropped)."""
    text = SCRIPT.read_text(encoding="utf-8")
    cells = re.split(r"^# %%.*$", text, flags=re.MULTILINE)[1:]
    return [cell.strip() for cell in cells]


def _page_blocks() -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    return [b.strip() for b in re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)]


def test_page_shows_the_script():
    """Every cell of the script is a code block of the page, in the same order."""
    cells, blocks = _script_cells(), _page_blocks()
    assert len(cells) >= 6
    assert blocks == cells


@pytest.mark.slow
@pytest.mark.timeout(1800)  # five model fits and their JAX compilations
def test_example_script_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(SCRIPT), run_name="__main__")
    printed = capsys.readouterr().out
    assert "adjusted Rand index" in printed
    assert "RMSE" in printed and "best:" in printed
    assert namespace["search"].best_params_["n_clusters"] in (2, 3)
    pytest.importorskip("matplotlib")
    assert (tmp_path / "synth_dev_forecast.png").is_file()
