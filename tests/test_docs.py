"""The documentation holds together: the README stays short and in its order, every
relative link (to a file, or to a heading's anchor) resolves, and every docs page opens
with what it is for."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {anchor(m) for m in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}


def test_the_readme_is_short_and_in_its_order():
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) <= 12 * 1024
    order = ["## Two commands", "## Supported models", "## The pipeline",
             "## Results at a glance", "## Documentation"]  # fmt: skip
    assert [text.index(h) for h in order] == sorted(text.index(h) for h in order)
    assert "make demo" in text and "make test" in text
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in text, f"README does not link {page.name}"


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"^[a-z]+://", target) or target.startswith("mailto:"):
                continue
            path, _, frag = target.partition("#")
            where = (page.parent / path).resolve() if path else page
            if not where.exists():
                broken.append(f"{page.name}: {target}")
            elif frag and where.suffix == ".md" and frag not in anchors(where):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


def test_every_docs_page_opens_with_what_it_is_for():
    for page in sorted((REPO / "docs").glob("*.md")):
        lines = [x for x in page.read_text().splitlines() if x.strip()]
        assert lines[0].startswith("# "), page.name
        assert len(" ".join(lines[1:3])) > 60, page.name  # a paragraph, not a bare heading
