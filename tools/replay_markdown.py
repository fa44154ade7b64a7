"""Markdown tables from ``python -m rspose_tune.replay --json FILE`` output, for the docs.

    python tools/replay_markdown.py docs/replay_results/policies.json [more.json ...]

Prints, per file, its command and one row per policy: seeds that came within the target, epochs to
get there (median [IQR]), the share of a full-budget grid's epochs that is, start-up trials, and,
when the file has a confirm stage, how often its winner was the table's best and its epochs.
Standard library only; nothing is computed that the replay did not print.
"""

from __future__ import annotations

import json
import sys


def _q(values, fmt: str = ".0f") -> str:
    median, q25, q75 = (None if v is None else format(v, fmt) for v in values)
    return f"{median or '-'} [{q25 or '-'}, {q75 or '-'}]"


def render(path: str) -> str:
    with open(path) as f:
        data = json.load(f)
    table = data["table"]
    grid = table["settings"] * table["max_epochs"]
    confirm = {c["name"]: c for c in (data.get("confirm") or {}).get("policies", [])}
    lines = [f"`{data['command']}`", "",
             f"| policy | within {data['target']:g} | epochs [IQR] | share of the {grid}-epoch grid | start-up trials |"
             + (" confirm names the best | confirm epochs |" if confirm else ""),
             "|---|---|---|---|---|" + ("---|---|" if confirm else "")]
    for p in data["policies"]:
        median = p["reach_epochs"][0]
        share = f"{median / grid:.0%}" if median is not None else "-"
        row = f"| {p['name']} | {p['reached']}/{p['seeds']} | {_q(p['reach_epochs'])} | {share} | {p['startup']:.0f} |"
        if confirm:
            c = confirm[p["name"]]
            row += f" {c['correct']}/{c['replays']} ({c['correct'] / c['replays']:.0%}) | {c['epochs']:.0f} |"
        lines.append(row)
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(render(p) for p in sys.argv[1:]))
