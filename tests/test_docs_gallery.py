"""The docs gallery hook (docs/hooks.py) and the landing page."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
from pathlib import Path

import numpy as np
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
    assert [name for name, _ in rendered.figures] == ["demo_1.png"]
    assert rendered.figures[0][1].startswith(b"\x89PNG")
    # Cells share one namespace; the figure drawn in cell 2 used cell 1's variable.
    assert page.index("total 6") < page.index("demo_1.png") < page.index("The end.")


ANIMATED = """\
# %% [markdown]
# # Animated

# %%
import matplotlib.pyplot as plt
from matplotlib.animation import FuncAnimation

fig, ax = plt.subplots(figsize=(2, 1.5))
(line,) = ax.plot([0, 1], [0, 0])
anim = FuncAnimation(fig, lambda j: line.set_ydata([0, j]), frames=3)
still, _ = plt.subplots(figsize=(2, 1.5))

# %%
fig, ax = plt.subplots(figsize=(2, 1.5))
anim_again = anim  # an animation already shown is not shown twice
"""


def test_render_saves_an_animation_as_a_gif_instead_of_its_figure():
    pytest.importorskip("matplotlib")
    image = pytest.importorskip("PIL.Image")
    rendered = hooks.render(ANIMATED, "anim")
    # The still figure of cell 1 is a png, the animated one a gif and not a png too;
    # cell 2 holds a new figure but no new animation.
    names = [name for name, _ in rendered.figures]
    assert names == ["anim_1.png", "anim_2.gif", "anim_3.png"]
    page = rendered.markdown
    assert page.index("![figure 1](anim_1.png)") < page.index("![animation 2](anim_2.gif)")
    assert page.index("anim_again") < page.index("![figure 3](anim_3.png)")
    with image.open(io.BytesIO(rendered.figures[1][1])) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3


def test_on_files_adds_each_page_and_its_figures(tmp_path):
    """Through mkdocs' own event dispatch, with the hook loaded as mkdocs.yml does."""
    pytest.importorskip("PIL")
    config_defaults = pytest.importorskip("mkdocs.config.defaults")
    from mkdocs.structure.files import Files

    docs = tmp_path / "docs"
    (docs / "gallery").mkdir(parents=True)
    (docs / "gallery" / "anim.py").write_text(ANIMATED, encoding="utf-8")
    config = config_defaults.MkDocsConfig()
    config.load_dict(
        {
            "site_name": "t",
            "docs_dir": str(docs),
            "site_dir": str(tmp_path / "site"),
            "hooks": [str(ROOT / "docs" / "hooks.py")],
        }
    )
    assert not config.validate()[0]
    files = config.plugins.on_files(Files([]), config=config)
    by_uri = {f.src_uri: f for f in files}
    assert sorted(by_uri) == [
        "gallery/anim.md",
        "gallery/anim_1.png",
        "gallery/anim_2.gif",
        "gallery/anim_3.png",
    ]
    assert by_uri["gallery/anim_2.gif"].content_bytes.startswith(b"GIF8")
    assert "![animation 2](anim_2.gif)" in by_uri["gallery/anim.md"].content_string


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


GALLERY = ROOT / "docs" / "gallery"
_GENERATED = re.compile(r"^(?P<stem>\w+?)(?:_\d+\.(?:png|gif)|\.md)$")


def _exists_in_the_build(target: Path) -> bool:
    """Whether ``target`` is a file, or a page or figure the hook makes of a script."""
    if target.exists():
        return True
    made = _GENERATED.match(target.name)
    return target.parent == GALLERY and bool(made) and (GALLERY / f"{made['stem']}.py").exists()


def _link_sources() -> list[tuple[Path, str]]:
    """(folder the links are relative to, text) of README, the docs pages and the prose
    of the gallery scripts."""
    out = [(ROOT, (ROOT / "README.md").read_text(encoding="utf-8"))]
    for page in sorted((ROOT / "docs").rglob("*.md")):
        out.append((page.parent, page.read_text(encoding="utf-8")))
    for script in sorted(GALLERY.glob("*.py")):
        cells = hooks.cells(script.read_text(encoding="utf-8"))
        out.append((GALLERY, "\n".join(text for kind, text in cells if kind == "markdown")))
    return out


def test_relative_links_reach_a_file_of_the_repository_or_the_build():
    """README, docs pages and gallery prose link only to what exists (the gallery's
    pages and figures exist once the hook has run its script)."""
    broken = []
    for folder, text in _link_sources():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:|#", target):
                continue
            path = (folder / target.split("#")[0]).resolve()
            if not _exists_in_the_build(path):
                broken.append(f"{folder.relative_to(ROOT)}: {target}")
    assert not broken


def test_every_gallery_script_is_in_the_nav_and_on_the_gallery_page():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    index = (GALLERY / "index.md").read_text(encoding="utf-8")
    for script in sorted(GALLERY.glob("*.py")):
        assert f": gallery/{script.stem}.md\n" in nav, script.name
        assert f"]({script.stem}.md)" in index, script.name
    for page in re.findall(r": (\S+\.md)\n", nav):
        assert _exists_in_the_build((ROOT / "docs" / page).resolve()), page


def _thumbnails(stem: str) -> list[str]:
    """Figures of the script ``stem`` that the gallery page shows."""
    index = (GALLERY / "index.md").read_text(encoding="utf-8")
    return re.findall(rf"\]\(({stem}_\d+\.(?:png|gif))\)", index)


@pytest.mark.slow
def test_correlated_outputs_page_shows_its_results_and_figure():
    pytest.importorskip("matplotlib")
    source = (GALLERY / "correlated_outputs.py").read_text(encoding="utf-8")
    rendered = hooks.render(source, "correlated_outputs")
    names = [name for name, _ in rendered.figures]
    assert names == ["correlated_outputs_1.png"]
    assert set(_thumbnails("correlated_outputs")) <= set(names)
    page = rendered.markdown
    # The script's own assert guards the claim of its prose; the page shows the numbers.
    assert len(re.findall(r"b beyond Input = 6: RMSE \d\.\d{3}", page)) == 2
    assert re.search(r"task_kernel: B =\n.*\n.*\n  correlation 0\.9\d", page)
    assert "![figure 1](correlated_outputs_1.png)" in page


@pytest.mark.slow
def test_growth_page_embeds_the_forecast_animation():
    pytest.importorskip("matplotlib")
    image = pytest.importorskip("PIL.Image")
    from mimosa_sklearn.datasets import load_weight

    rendered = hooks.render((GALLERY / "growth.py").read_text(encoding="utf-8"), "growth")
    names = [name for name, _ in rendered.figures]
    assert names == [f"growth_{n}.png" for n in range(1, 6)] + ["growth_6.gif"]
    assert set(_thumbnails("growth")) <= set(names)
    assert rendered.markdown.rstrip().splitlines()[-3] == "![animation 6](growth_6.gif)"
    # One frame per weighing of the animated child, and one before the first.
    X, _ = load_weight()
    child = np.random.default_rng(0).permutation(X["ID"].unique())[0]
    with image.open(io.BytesIO(rendered.figures[-1][1])) as gif:
        assert gif.n_frames == int((X["ID"] == child).sum()) + 1
        first = np.asarray(gif.convert("RGB"))
        gif.seek(gif.n_frames - 1)
        assert not np.array_equal(first, np.asarray(gif.convert("RGB")))


@pytest.mark.slow
def test_processes_page_shows_two_processes_fitting_the_one_process_model():
    pytest.importorskip("matplotlib")
    rendered = hooks.render((GALLERY / "processes.py").read_text(encoding="utf-8"), "processes")
    page = rendered.markdown
    elbos = re.findall(r"process(?: \d)?: (\d+) tasks.*ELBO (-?\d+\.\d+)", page)
    assert [n for n, _ in elbos] == ["30", "30", "60"]
    # The processes' model is the one-process model (printed to 9 decimals).
    assert len({elbo for _, elbo in elbos}) == 1
    assert not re.search(r"^\[Gloo\]", page, re.MULTILINE)  # filtered from the output
    assert [name for name, _ in rendered.figures] == ["processes_1.png"]
    assert set(_thumbnails("processes")) <= {"processes_1.png"}
