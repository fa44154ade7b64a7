"""The layers of docs/ARCHITECTURE.md hold: every import in ``rspose_tune/`` and ``trainables/`` (inside
functions too) goes to the same or a lower layer, nothing in rspose_tune imports trainables, and the
document's layer table lists the layers in this order."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Bottom up, as the table of docs/ARCHITECTURE.md; a module is in the layer of its longest prefix.
LAYERS = [
    ("rspose_tune", "rspose_tune.errors", "rspose_tune._layout", "rspose_tune._numbers", "rspose_tune._flags"),
    ("rspose_tune._storage",),
    ("rspose_tune.losses",), ("rspose_tune.spaces",), ("rspose_tune.mmpose_adapter",), ("rspose_tune.demo_data",),
    ("rspose_tune.training",), ("rspose_tune._resources",), ("rspose_tune._ray_compat",), ("rspose_tune._asha",),
    ("rspose_tune._pasha",), ("rspose_tune._scheduler",), ("rspose_tune._limiter",), ("rspose_tune.searcher",),
    ("rspose_tune.results",), ("rspose_tune.results_callback",), ("rspose_tune.runspec",),
    ("rspose_tune.tracking", "rspose_tune._tracking_callbacks"), ("rspose_tune.report",),
    ("rspose_tune._stages", "rspose_tune._dryrun"),
    ("rspose_tune.search", "rspose_tune.export", "rspose_tune.__main__"),
    ("rspose_tune.bench",), ("rspose_tune.replay",), ("trainables",),
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYER:
            return LAYER[".".join(parts[:n])]
    raise AssertionError(f"{module} has no layer: give it a row in docs/ARCHITECTURE.md and in LAYERS")


def _imports(path: Path, module: str):
    """``(line, imported module)`` for every import of the project in ``path``, inside functions too."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
            # `from rspose_tune import losses` imports the module rspose_tune.losses
            targets = [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in node.names]
        else:
            continue
        yield from ((node.lineno, t) for t in targets if t.split(".")[0] in ("rspose_tune", "trainables"))


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _modules():
    for top in ("rspose_tune", "trainables"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_imports_go_to_the_same_or_a_lower_layer_and_rspose_tune_never_imports_trainables():
    wrong = []
    for path, module in _modules():
        for line, target in _imports(path, module):
            where = f"{path.relative_to(ROOT)}:{line}: {module} imports {target}"
            if module.startswith("rspose_tune") and target.split(".")[0] == "trainables":
                wrong.append(f"{where} (rspose_tune never imports trainables)")
            elif _layer(target) > _layer(module):
                wrong.append(f"{where}, a higher layer")
    assert not wrong, "\n".join(wrong)


def test_the_architecture_table_lists_the_layers_in_this_order():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    rows = re.findall(r"^\|[^|\n]*\|([^|\n]*)\|[^|\n]*\|$", text.split("## Shared vocabulary")[0], re.M)
    rows = [r for r in rows if "`" in r]
    row_of = {}
    for name in LAYER:
        path = name.replace(".", "/")
        hits = [i for i, r in enumerate(rows) if f"`{path}.py`" in r or f"`{path}/" in r]
        if name != "rspose_tune":  # the package's own __init__: names only
            assert hits, f"no row of docs/ARCHITECTURE.md's layer table names {path}.py or {path}/"
            row_of[name] = hits[0]
    order = [row_of[n] for names in LAYERS for n in names if n in row_of]
    assert order == sorted(order), [n for names in LAYERS for n in names if n in row_of]


def _project_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (inside functions too), each resolved to a module file."""
    graph: dict[str, set[str]] = {}
    for path, module in _modules():
        targets = graph.setdefault(module, set())
        for _line, target in _imports(path, module):
            while target and not _is_module(target):  # `from a.b import name`: the module a.b
                target = target.rpartition(".")[0]
            if target and target != module:
                targets.add(target)
    return graph


def test_no_module_imports_itself_back_through_a_chain():
    """No circle (A imports B, ..., which imports A), counting imports inside functions: imports run one way."""
    graph, circles, state = _project_graph(), [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                circles.append(" -> ".join([*stack[stack.index(target):], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(circles)
