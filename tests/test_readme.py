"""README.md and docs/: a page a newcomer finishes, whose links lead somewhere.

README holds what a newcomer needs (the two setup commands first, the headline, their own model,
defense and data, how to read a result) and links to docs/guides/ for the rest; generated pages
live in docs/results/ and docs/site/.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def broken(page: Path) -> list[str]:
    return [
        f"{page.relative_to(ROOT)}: {t}"
        for t in LINK.findall(page.read_text())
        if not t.startswith(("http:", "https:", "mailto:")) and not (page.parent / t).exists()
    ]


def test_readme_is_short_and_opens_with_the_two_setup_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md is {len(lines)} lines: move the detail into docs/guides/"
    head = "\n".join(lines[:20])
    assert re.search(r"^make bench\b", head, re.M) and re.search(r"^make test\b", head, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # CI runs the command README gives


def test_every_guide_is_linked_from_the_readme():
    text = (ROOT / "README.md").read_text()
    for guide in sorted((ROOT / "docs" / "guides").glob("*.md")):
        assert f"docs/guides/{guide.name}" in text, guide.name


def test_every_relative_link_in_readme_and_docs_resolves():
    bad = [b for p in pages() for b in broken(p)]
    assert not bad, "\n".join(bad)


def test_the_link_check_can_fail(tmp_path):
    page = tmp_path / "x.md"
    page.write_text("[ok](x.md) [gone](nowhere/file.md) [web](https://example.org)\n")
    assert [t for t in LINK.findall(page.read_text()) if not (page.parent / t).exists()] == [
        "nowhere/file.md",
        "https://example.org",
    ]
