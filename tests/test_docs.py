"""The README and docs/ pages: every relative link resolves, and the cluster commands agree.

Fast (no imports beyond the standard library); a moved or renamed page or heading fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """``text`` without its fenced code blocks (their brackets and ``#`` lines are code)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    out: set[str] = set()
    for line in _prose(text).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in out:
            n += 1
            candidate = f"{slug}-{n}"
        out.add(candidate)
    return out


def broken_links(page: Path) -> list[str]:
    """Each relative link of ``page`` whose file, or whose anchor in a Markdown file, is missing."""
    problems = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"{page.relative_to(REPO)}: {target} (no file {path})")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            problems.append(f"{page.relative_to(REPO)}: {target} (no heading #{anchor} in {file.relative_to(REPO)})")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Exit codes\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md) [ok](docs/a.md#exit-codes) [web](https://example.org/x)\n"
                    "[gone](docs/b.md) [no heading](docs/a.md#resume)\n```\n[code](not/a/link.md)\n```\n")
    global REPO
    old, REPO = REPO, tmp_path
    try:
        problems = broken_links(page)
    finally:
        REPO = old
    assert problems == ["README.md: docs/b.md (no file docs/b.md)",
                        "README.md: docs/a.md#resume (no heading #resume in docs/a.md)"]


def test_anchor_slugs_follow_github():
    text = "# Price it first: `--dry-run`\n## Confidence calibration (paper App. C)\n## Notes\n## Notes\n"
    assert anchors(text) == {"price-it-first---dry-run", "confidence-calibration-paper-app-c", "notes", "notes-1"}


def _bash_block(text: str, heading: str) -> str:
    match = re.search(re.escape(heading) + r"\n\n```bash\n(.*?)```", text, re.S)
    assert match, f"no bash block under {heading!r}"
    return match.group(1)


def test_cluster_page_has_the_readme_cluster_commands():
    """tests/search/test_cluster_commands.py runs the README's block; docs/cluster.md must show the same."""
    readme = _bash_block((REPO / "README.md").read_text(), "### A Ray cluster")
    page = _bash_block((REPO / "docs" / "cluster.md").read_text(), "## Start the nodes and the search (token authentication)")
    assert page == readme
