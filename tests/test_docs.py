"""The docs: generated blocks match their result files, the README stays short, and every relative link resolves."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: A markdown link or image: [text](target) / ![alt](target); the target ends at whitespace or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_generated_blocks_are_current() -> None:
    check = subprocess.run([sys.executable, "bench/docs.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr + check.stdout


def test_readme_fits_on_a_few_screens() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


def anchors(doc: Path) -> set[str]:
    """GitHub's anchors for the headings of ``doc``: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_points_to_a_file() -> None:
    """Every relative link names a file that exists, and its #anchor, if any, a heading of that file."""
    missing = []
    for doc in DOCS:
        # Code spans and fenced blocks hold commands and output, not links.
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        text = re.sub(r"`[^`\n]*`", "", text)
        for target in LINK.findall(text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue  # http:, mailto:, ...
            if target.startswith("#"):
                target = doc.name + target
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve()
            if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
                missing.append(f"{doc.relative_to(REPO)}: {target}")
    assert not missing, "links to files or headings that do not exist:\n" + "\n".join(missing)


def test_check_fails_on_a_stale_block() -> None:
    """--check reads the blocks, not just their markers: an edited number makes it exit 1 and name the block."""
    spec = importlib.util.spec_from_file_location("psvit_bench_docs", REPO / "bench" / "docs.py")
    docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs)
    readme = REPO / "README.md"
    text = readme.read_text()
    fresh, changed = docs.render(readme, text)
    assert fresh == text and changed == []
    name = next(m["name"] for m in docs.MARKER.finditer(text))
    stale = docs.MARKER.sub(lambda m: m[0].replace(m["body"], m["body"] + "| 1.23% |\n", 1), text, count=1)
    assert docs.render(readme, stale)[1] == [name]
