"""The README and docs/ pages: every relative link resolves, the cluster commands agree, and the
flag lists of docs/real_backbone.md and docs/runs.md are the search parser's.

Fast (the standard library, and the search's parser for the flag lists); a moved or renamed page or
heading, or a flag added without its line in the docs, fails here.
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


# --------------------------------------------------------------------------------------------
# Issue 25: the flag lists of docs/real_backbone.md and docs/runs.md are the search parser's
# --------------------------------------------------------------------------------------------

FLAG = re.compile(r"`(--[a-z][a-z0-9-]*)")


def _primary_flags(parser) -> dict[str, str]:
    """Every option string of the search's parser mapped to its action's first long one
    (``--preset`` to ``--backbone``, ``--no-baseline`` to ``--baseline``)."""
    out = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        for option in longs:
            out[option] = longs[0]
    return out


def _doc_flags(text: str, primary: dict[str, str], where: str) -> list[str]:
    found = FLAG.findall(text)
    unknown = [f for f in found if f not in primary]
    assert not unknown, f"{where}: {unknown} are no flags of python -m rspose_tune.search"
    return sorted({primary[f] for f in found})


def flag_list_problems(real_backbone: str, runs: str) -> list[str]:
    """Where the two pages' flag lists differ from the search parser's groups and resume rules."""
    from rspose_tune.search import RESUME_MAY_CHANGE, build_parser

    parser = build_parser()
    primary = _primary_flags(parser)
    problems = []
    section = real_backbone.split("\n## Flags\n", 1)[1].split("\n## ", 1)[0]
    bullets = dict(re.findall(r"^- \*\*(.+?)\*\*: (.*?)(?=^- \*\*|\Z)", section, re.S | re.M))
    groups = {g.title: g for g in parser._action_groups if g.title not in ("positional arguments", "options")}
    if sorted(bullets) != sorted(groups):
        problems.append(f"real_backbone.md's groups {sorted(bullets)} are not --help's {sorted(groups)}")
    count = re.search(r"lists every flag, in (\w+) groups", section)
    words = {3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}
    if not count or count.group(1) != words.get(len(groups)):
        problems.append(f"real_backbone.md does not say '{words.get(len(groups))} groups'")
    for title, group in groups.items():
        want = sorted({primary[o] for a in group._group_actions for o in a.option_strings if o.startswith("--")})
        have = _doc_flags(bullets.get(title, ""), primary, f"real_backbone.md's {title!r}")
        if have != want:
            problems.append(f"real_backbone.md's {title!r}: missing {sorted(set(want) - set(have))}, "
                            f"extra {sorted(set(have) - set(want))}")
    # runs.md: the flags that define a run are every flag but those that may change, the one-shot ones
    # and --warm-start (read once, refused on --resume); the flags that may change are RESUME_MAY_CHANGE.
    define = re.search(r"\*\*Flags that define the run\*\* \((.*?)\)", runs, re.S)
    may = re.search(r"\*\*Flags that may change on `--resume`:\*\* (.*?)\(each", runs, re.S)
    one_shot = {"--help", "--resume", "--dry-run", "--epoch-gpu-hours", "--warm-start"}
    want = sorted(set(primary.values()) - set(RESUME_MAY_CHANGE) - one_shot)
    have = _doc_flags(define.group(1) if define else "", primary, "runs.md's flags that define the run")
    if have != want:
        problems.append(f"runs.md's flags that define the run: missing {sorted(set(want) - set(have))}, "
                        f"extra {sorted(set(have) - set(want))}")
    have = _doc_flags(may.group(1) if may else "", primary, "runs.md's flags that may change")
    if have != sorted(RESUME_MAY_CHANGE):
        missing, extra = sorted(set(RESUME_MAY_CHANGE) - set(have)), sorted(set(have) - set(RESUME_MAY_CHANGE))
        problems.append(f"runs.md's flags that may change on --resume: missing {missing}, extra {extra}")
    return problems


def test_the_flag_lists_of_the_docs_are_the_parsers():
    docs = REPO / "docs"
    problems = flag_list_problems((docs / "real_backbone.md").read_text(), (docs / "runs.md").read_text())
    assert not problems, "\n".join(problems)


def test_a_flag_missing_from_the_docs_is_found():
    """The issue-25 state: runs.md without --trainable, real_backbone.md with four groups and no tracking flags."""
    real = (REPO / "docs" / "real_backbone.md").read_text()
    runs = (REPO / "docs" / "runs.md").read_text()
    old_real = real.replace("in five groups", "in four groups")
    old_real = old_real.replace(", `--mlflow`, `--wandb` ([tracking.md](tracking.md))", "")
    problems = flag_list_problems(old_real, runs.replace("`--trainable`,", ""))
    assert any("four" not in p and "'five groups'" in p for p in problems), problems
    assert "real_backbone.md's 'output': missing ['--mlflow', '--wandb'], extra []" in problems
    assert "runs.md's flags that define the run: missing ['--trainable'], extra []" in problems


# --------------------------------------------------------------------------------------------
# The preset lists of the README and docs/real_backbone.md are the shipped presets
# --------------------------------------------------------------------------------------------


def preset_list_problems(readme: str, real_backbone: str, shipped: list[str]) -> list[str]:
    """Where the README's ``Presets:`` line or real_backbone.md's preset table misses or adds a preset."""
    problems = []
    line = re.search(r"^Presets: (.*?)\(`search_spaces/\*\.yaml`\)", readme, re.S | re.M)
    table = real_backbone.split("\n## Presets\n", 1)[-1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (`.*?) \|", table, re.M)
    for where, names in (("README.md's Presets line", re.findall(r"`([\w.-]+)`", line.group(1)) if line else []),
                         ("real_backbone.md's preset table", [n for row in rows for n in re.findall(r"`([\w.-]+)`", row)])):
        if sorted(names) != sorted(shipped):
            problems.append(f"{where}: missing {sorted(set(shipped) - set(names))}, extra {sorted(set(names) - set(shipped))}")
    return problems


def test_the_preset_lists_of_the_docs_are_the_shipped_presets():
    from rspose_tune.spaces import list_presets

    readme, real = (REPO / "README.md").read_text(), (REPO / "docs" / "real_backbone.md").read_text()
    assert not preset_list_problems(readme, real, list_presets())
    problems = preset_list_problems(readme.replace("`rtmpose-t`, ", ""), real, [*list_presets(), "new"])
    assert problems == ["README.md's Presets line: missing ['new', 'rtmpose-t'], extra []",
                        "real_backbone.md's preset table: missing ['new'], extra []"]
