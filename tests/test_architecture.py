"""The package's imports point one way, form no cycle, and reach no other module's privates.

The order (DESIGN.md)::

    core <- filters <- policy <- guard <- serving <- {testing, audit, distributed, cli}

(the Guard's call surface, ``_calls``, sits between ``policy`` and ``guard``),
with ``signals``, ``expand``, ``text`` and ``models`` beside ``filters``, using only
``core``, ``_validation`` and ``exceptions``. Imports are read with ``ast`` (every
``import`` statement, function bodies included, except under ``if TYPE_CHECKING:``), so
an import hidden in a function to dodge a cycle still counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import guardrails

ROOT = Path(guardrails.__file__).resolve().parent
PKG = "guardrails"

#: Layer of each top-level part of the package; an import may only point to a lower
#: layer (or within its own part). ``_validation`` and ``exceptions`` are the floor.
LAYERS = {
    "exceptions": 0,
    "_validation": 1,
    "core": 2,
    "signals": 3,
    "expand": 3,
    "text": 3,
    "models": 3,
    # Modules other branches add (ANN retrieval, Prometheus metrics): both use only the
    # layers below, like models.
    "retrieval": 3,
    "metrics": 3,
    "filters": 4,
    "policy": 5,
    # The Guard's call surface and requests (GuardCalls, GuardRequest, GuardResult), which
    # ServingGuard shares; guard.py re-exports them.
    "_calls": 6,
    "guard": 7,
    "serving": 8,
    "testing": 9,
    "audit": 9,
    "distributed": 9,
    "cli": 10,
    "__main__": 11,
}
#: Parts beside ``filters`` that it may use (they use only the layers below them).
FILTERS_MAY_USE = {"signals", "expand", "text"}
#: Parts beside filters that may use only the layers below them.
BESIDE = FILTERS_MAY_USE | {"models", "retrieval", "metrics"}
#: Parts that are clients of the public API and may import the package root.
ROOT_CLIENTS = {"audit", "distributed", "cli", "__main__"}

#: Known violations, each with why it is still here and who removes it. An entry that no
#: longer matches anything fails the test, so the list only shrinks.
ALLOWED: dict[tuple[str, str], str] = {
    # (importer, imported module): "why it is still here, and who removes it". Empty since
    # ServingGuard moved to guardrails/serving.py and signals/_db.py took the store's
    # shared helpers (issue 13, part b).
}


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, compiled extensions (a ``.c`` source beside) included."""
    out = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    for c in sorted(root.rglob("_*.c")):
        out.setdefault(_module_name(c, root), c)
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every import node, skipping ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _edges(modules: dict[str, Path]):
    """(importer, imported module, imported name or None) for every package import."""
    out = []
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        if path.suffix != ".py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == PKG or a.name.startswith(PKG + "."):
                        out.append((mod, a.name, None))
                continue
            target = _resolve(mod, is_pkg, node)
            if not (target == PKG or target.startswith(PKG + ".")):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in modules:  # `from . import _run` imports a module
                    out.append((mod, sub, None))
                else:
                    out.append((mod, target, a.name))
    return out


def _part(mod: str) -> str:
    parts = mod.split(".")
    if len(parts) == 1:
        return ""  # the package root
    if parts[1] == "signals" and len(parts) > 2 and parts[2] == "serving":
        return "serving"  # serving sits above guard wherever it lives
    return parts[1]


def _violations(root: Path = ROOT) -> list[tuple[str, object]]:
    modules = _modules(root)
    edges = _edges(modules)
    found = []
    for src, dst, name in edges:
        key = (src, dst)
        ps, pd = _part(src), _part(dst)
        bad = None
        if name is not None and name.startswith("_") and not name.startswith("__"):
            if dst != src:
                bad = f"{src} imports the private name {name!r} from {dst}"
        if ps and ps != pd:
            if pd == "":
                if ps not in ROOT_CLIENTS:
                    bad = bad or f"{src} imports the package root (only its clients may)"
            else:
                ls, ld = LAYERS[ps], LAYERS[pd]
                beside_ok = ps == "filters" and pd in FILTERS_MAY_USE
                if ld > ls or (ld == ls and not beside_ok):
                    bad = bad or f"{src} ({ps}) imports {dst} ({pd}) against the layer order"
                elif ps in BESIDE and ld > LAYERS["core"]:
                    bad = bad or f"{src} ({ps}) may use only core, _validation and exceptions"
        if bad is not None:
            if key in ALLOWED:
                found.append(("allowed", key))
            else:
                found.append(("bad", bad))
    return found


def _cycles(modules: dict[str, Path]) -> list[list[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for src, dst, _ in _edges(modules):
        if dst in graph and dst != src:
            graph[src].add(dst)
    # Importing a submodule runs its package's __init__ first.
    for m in modules:
        parent = m.rsplit(".", 1)[0]
        if "." in m and parent in graph and parent != m:
            for src in list(graph):
                if m in graph[src] and not (src == parent or src.startswith(parent + ".")):
                    graph[src].add(parent)
    # Tarjan's strongly connected components.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, comps = set(), [], []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def test_every_part_has_a_layer():
    parts = {_part(m) for m in _modules()} - {""}
    assert parts <= set(LAYERS), sorted(parts - set(LAYERS))


def test_no_import_cycles():
    assert _cycles(_modules()) == []


def test_imports_follow_the_layer_order_and_reach_no_privates():
    found = _violations()
    bad = [msg for kind, msg in found if kind == "bad"]
    assert bad == [], "\n".join(bad)


def test_allow_list_only_names_live_violations():
    used = {key for kind, key in _violations() if kind == "allowed"}
    stale = set(ALLOWED) - used
    assert not stale, f"delete these ALLOWED entries, they no longer occur: {sorted(stale)}"


def test_the_checker_sees_each_kind_of_violation(tmp_path):
    pkg = tmp_path / PKG
    for sub in ("filters", "policy"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "guard.py").write_text("from .policy import x\n")
    # Upward (filters -> guard), hidden in a function body; a private name; TYPE_CHECKING
    # imports do not count.
    (pkg / "filters" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from ..policy.b import _hidden\n"
        "if TYPE_CHECKING:\n    from ..guard import Guard\n"
        "def f():\n    from .. import guard\n"
    )
    # A cycle inside policy.
    (pkg / "policy" / "x.py").write_text("from .y import z\n")
    (pkg / "policy" / "y.py").write_text("from .x import w\n")
    (pkg / "policy" / "b.py").write_text("")
    bad = [msg for kind, msg in _violations(pkg) if kind == "bad"]
    assert any("private name '_hidden'" in m for m in bad), bad
    assert any("filters.a (filters) imports guardrails.guard" in m for m in bad), bad
    assert len(bad) == 2, bad
    assert _cycles(_modules(pkg)) == [["guardrails.policy.x", "guardrails.policy.y"]]
