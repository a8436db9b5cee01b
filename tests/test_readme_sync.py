"""README.md's measured figures are copies of benchmarks/results/ (scripts/sync_readme.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_sync():
    spec = importlib.util.spec_from_file_location(
        "sync_readme", ROOT / "scripts" / "sync_readme.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync = _load_sync()


def test_readme_blocks_equal_the_results_files():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(sync.BLOCK.findall(readme)) >= 10
    assert sync.synced(readme) == readme, "README.md is stale: run python scripts/sync_readme.py"


def test_a_stale_block_is_rewritten_from_its_section(tmp_path):
    results = tmp_path / "r.md"
    results.write_text(
        "# log\nold run\n<!-- --8<-- [start:t] -->\n| a |\n|---|\n| 2 |\n"
        "<!-- --8<-- [end:t] -->\nnotes\n",
        encoding="utf-8",
    )
    readme = (
        "intro\n<!-- generated from r.md:t by scripts/sync_readme.py -->\n| a |\n|---|\n| 1 |\n"
        "<!-- end generated -->\nafter\n"
    )
    expected = readme.replace("| 1 |", "| 2 |")
    assert sync.synced(readme, root=tmp_path) == expected
    # The whole file when no section is named, section markers left out.
    whole = readme.replace("r.md:t", "r.md")
    assert "# log\nold run\n| a |\n|---|\n| 2 |\nnotes\n<!-- end" in sync.synced(whole, tmp_path)


@pytest.mark.parametrize(
    "text",
    ["no markers\n", "<!-- --8<-- [end:t] -->\n<!-- --8<-- [start:t] -->\n"],
    ids=["missing", "reversed"],
)
def test_a_missing_section_is_an_error(text):
    with pytest.raises(ValueError, match="section 't'"):
        sync.section(text, "t", "r.md")


def test_docs_snippets_name_existing_sections():
    """Every ``--8<-- "file:section"`` of the docs names a section that exists."""
    pages = sorted((ROOT / "docs").glob("*.md"))
    found = 0
    for page in pages:
        for path, name in re.findall(r'--8<-- "([^":]+):([\w-]+)"', page.read_text("utf-8")):
            sync.section((ROOT / path).read_text(encoding="utf-8"), name, path)
            found += 1
    assert found >= 5
