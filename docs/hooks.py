"""mkdocs hook: run the gallery's example scripts and publish them as pages.

Each ``docs/gallery/*.py`` is a script in jupytext's percent format: ``# %% [markdown]``
cells hold the prose (every line a ``#`` comment), ``# %%`` cells hold code. At every
build, the hook runs the code cells in order, in one namespace per script, in a fresh
temporary folder, and writes the page ``gallery/<name>.md``: the prose, each code cell,
what it printed, and the figures it left open (saved as ``gallery/<name>_<n>.png``).
A matplotlib animation that a cell binds to a name is saved as ``gallery/<name>_<n>.gif``
instead of its figure (pillow, which comes with matplotlib, writes it). A failing cell
fails the build. Results are kept per script content while ``mkdocs serve`` runs, so
editing another page does not run the examples again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

GALLERY = "gallery"
_CELL = re.compile(r"^# %%(?P<kind>[^\n]*)$", re.MULTILINE)
_cache: dict[str, Rendered] = {}
_log = logging.getLogger("mkdocs.hooks.gallery")


@dataclass
class Rendered:
    """A gallery script run: its page and its figures, in order, as ``(file name,
    bytes)`` (png for a figure, gif for an animation)."""

    markdown: str
    figures: list[tuple[str, bytes]] = field(default_factory=list)


def cells(source: str) -> list[tuple[str, str]]:
    """Split a percent-format script into ``(kind, text)`` cells, kind ``"markdown"``
    or ``"code"``; markdown cells lose their leading ``# ``."""
    marks = list(_CELL.finditer(source))
    out = []
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        end = following.start() if following else len(source)
        body = source[mark.end() : end].strip("\n")
        if "[markdown]" in mark["kind"]:
            lines = [re.sub(r"^# ?", "", line) for line in body.splitlines()]
            out.append(("markdown", "\n".join(lines).strip()))
        elif body.strip():
            out.append(("code", body.rstrip()))
    return out


def render(source: str, name: str) -> Rendered:
    """Run the script ``source`` cell by cell and build its page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    namespace: dict[str, object] = {"__name__": "__main__"}
    parts: list[str] = []
    figures: list[tuple[str, bytes]] = []
    seen: list[object] = []  # animations already saved, shown once
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="mimosa-gallery-") as folder:
        os.chdir(folder)
        try:
            for i, (kind, text) in enumerate(cells(source)):
                if kind == "markdown":
                    parts.append(text)
                    continue
                parts.append(f"```python\n{text}\n```")
                printed = io.StringIO()
                with contextlib.redirect_stdout(printed):
                    exec(compile(text, f"{name}.py, cell {i}", "exec"), namespace)
                if printed.getvalue().strip():
                    parts.append(f'```text title="output"\n{printed.getvalue().rstrip()}\n```')
                animations = _new_animations(namespace, seen)
                # An animation draws on its own figure (kept in _fig, no public accessor).
                animated = {id(anim._fig) for anim in animations}
                for number in plt.get_fignums():
                    if id(plt.figure(number)) in animated:
                        continue
                    png = io.BytesIO()
                    plt.figure(number).savefig(png, format="png", dpi=90, bbox_inches="tight")
                    figures.append((f"{name}_{len(figures) + 1}.png", png.getvalue()))
                    parts.append(f"![figure {len(figures)}]({figures[-1][0]})")
                for anim in animations:
                    gif = Path(f"{name}_{len(figures) + 1}.gif")
                    anim.save(gif, writer="pillow", dpi=80)
                    figures.append((gif.name, gif.read_bytes()))
                    parts.append(f"![animation {len(figures)}]({gif.name})")
                plt.close("all")
        finally:
            os.chdir(cwd)
    download = f"[Download the script]({name}.py) and run it with `python {name}.py`."
    return Rendered("\n\n".join([*parts, download]) + "\n", figures)


def _new_animations(namespace: dict[str, object], seen: list[object]) -> list:
    """The matplotlib animations bound to a name of ``namespace`` that are not in
    ``seen`` (which they join), in the order of the names' definition."""
    from matplotlib.animation import Animation

    new = [
        value
        for value in namespace.values()
        if isinstance(value, Animation) and not any(value is old for old in seen)
    ]
    seen.extend(new)
    return new


def on_files(files, config):
    """Add the rendered page and figures of every gallery script to the build."""
    from mkdocs.structure.files import File

    for script in sorted((Path(config["docs_dir"]) / GALLERY).glob("*.py")):
        source = script.read_text(encoding="utf-8")
        key = hashlib.sha256(source.encode()).hexdigest()
        if key not in _cache:
            start = time.perf_counter()
            _cache[key] = render(source, script.stem)
            _log.info("gallery: ran %s in %.1f s", script.name, time.perf_counter() - start)
        rendered = _cache[key]
        stem = f"{GALLERY}/{script.stem}"
        files.append(File.generated(config, f"{stem}.md", content=rendered.markdown))
        for file_name, content in rendered.figures:
            files.append(File.generated(config, f"{GALLERY}/{file_name}", content=content))
    return files
