"""Copy the measured figures of ``benchmarks/results/`` into README.md.

GitHub does not run mkdocs snippets, so README.md holds copies of the results tables
between generated-block markers::

    <!-- generated from benchmarks/results/speed.md:table by scripts/sync_readme.py -->
    ...copied lines...
    <!-- end generated -->

``path:name`` names a section of a results file, written there with the markers of
``pymdownx.snippets`` (``<!-- --8<-- [start:name] -->`` ... ``[end:name]``), so that the
docs include the very same lines with ``--8<-- "path:name"``. Run

    python scripts/sync_readme.py            # rewrite README.md's generated blocks
    python scripts/sync_readme.py --check    # exit 1 if one differs (run by the tests)
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

BLOCK = re.compile(
    r"(?P<head><!-- generated from (?P<path>[^\s:]+)(?::(?P<section>[\w-]+))? "
    r"by scripts/sync_readme\.py -->\n)(?P<body>.*?)(?P<tail><!-- end generated -->)",
    re.DOTALL,
)
SECTION_MARK = re.compile(r"^\s*<!-- --8<-- \[(?P<kind>start|end):(?P<name>[\w-]+)\] -->\s*$")


def section(text: str, name: str | None, source: str = "<text>") -> str:
    """The lines of section ``name`` of ``text`` (all of it when ``name`` is None).

    As ``pymdownx.snippets`` does, the section markers themselves, of any section, are
    left out.
    """
    lines = text.splitlines(keepends=True)
    if name is None:
        kept = lines
    else:
        starts = [i for i, line in enumerate(lines) if _mark(line) == ("start", name)]
        ends = [i for i, line in enumerate(lines) if _mark(line) == ("end", name)]
        if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
            raise ValueError(
                f"{source}: section {name!r} needs exactly one start marker followed by "
                f"one end marker; found {len(starts)} start(s) and {len(ends)} end(s)"
            )
        kept = lines[starts[0] + 1 : ends[0]]
    body = "".join(line for line in kept if _mark(line) is None)
    return body.strip("\n") + "\n"


def _mark(line: str) -> tuple[str, str] | None:
    match = SECTION_MARK.match(line)
    return (match["kind"], match["name"]) if match else None


def synced(readme: str, root: Path = ROOT) -> str:
    """``readme`` with every generated block replaced by its source's current lines."""

    def fill(match: re.Match[str]) -> str:
        path = root / match["path"]
        if not path.is_file():
            raise FileNotFoundError(f"README.md: generated block names a missing file {path}")
        body = section(path.read_text(encoding="utf-8"), match["section"], match["path"])
        return f"{match['head']}{body}{match['tail']}"

    return BLOCK.sub(fill, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if stale")
    args = parser.parse_args(argv)
    current = README.read_text(encoding="utf-8")
    wanted = synced(current)
    if wanted == current:
        return 0
    if args.check:
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            "README.md",
            "README.md (from benchmarks/results)",
        )
        sys.stdout.writelines(diff)
        print("README.md is stale: run python scripts/sync_readme.py", file=sys.stderr)
        return 1
    README.write_text(wanted, encoding="utf-8")
    print("README.md updated from benchmarks/results/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
