"""The packages import each other downwards only (docs/design.md, "Layers"), and no file imports itself back.

Every ``.py`` under pipeline/, shards/ and cli/ is parsed (nothing is imported), every import statement counts,
inside functions too. A package is a folder under pipeline/ or a top-level module of it, shards/ or cli/. A failure
names the import lines (file:line) that close a cycle or climb a layer.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pipeline", "shards", "cli")

# Bottom to top. A package may import every package of the layers below its own and, inside its own layer, only the
# packages listed beside it. A new package goes into one layer here and in docs/design.md.
LAYERS: list[tuple[str, dict[str, set[str]]]] = [
    ("helpers", {"pipeline": set(), "pipeline.names": set(), "pipeline.hub": set()}),
    ("foundation", {"pipeline.models": set(), "pipeline.dist": set(), "pipeline.tracking": set(),
                    "pipeline.datasets": set(), "shards": set()}),
    ("stage 1", {"pipeline.generation": set(), "pipeline.captioning": {"pipeline.generation"}}),
    ("parts", {"pipeline.losses": set(), "pipeline.replay": set(), "pipeline.evaluation": set(),
               "pipeline.clts": {"pipeline.evaluation"}, "pipeline.moe": {"pipeline.evaluation"}}),
    ("methods", {"pipeline.methods": set()}),
    ("loops", {"pipeline.training": set()}),
    ("tables, bench, doctor", {"pipeline.tables": set(), "pipeline.bench": set(),
                               "pipeline.doctor": {"pipeline.bench"}}),
    ("cli", {"cli": set()}),
]


@dataclass(frozen=True)
class Edge:
    source: str  # importing module (or package)
    target: str  # imported module (or package)
    where: str  # "file:line" of the import statement


def module_name(path: Path, root: Path) -> str:
    """``pipeline/clts/heads.py`` -> ``pipeline.clts.heads``; a package's ``__init__.py`` is the package."""
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def package_of(module: str) -> str:
    """The layer unit: ``pipeline.<first part>`` under pipeline/ (``pipeline`` for its ``__init__``), else the top."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "pipeline" else parts[0]


def imports(root: Path) -> list[Edge]:
    """Every import between the modules under ``root``'s source folders, as file-level edges."""
    files = {module_name(f, root): f for top in SOURCES if (root / top).is_dir() for f in sorted((root / top).rglob("*.py"))}

    def known(name: str) -> str | None:  # the longest prefix that is one of our modules
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    edges = []
    for module, path in files.items():
        here = path.relative_to(root).parent.parts  # the package a relative import starts from
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [known(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join([*here[: len(here) - node.level + 1], *([node.module] if node.module else [])]) \
                    if node.level else node.module or ""
                # ``from pkg import mod`` imports the module ``pkg.mod``; ``from mod import name``, the module ``mod``
                targets = [known(f"{base}.{alias.name}") if f"{base}.{alias.name}" in files else known(base)
                           for alias in node.names]
            else:
                continue
            for target in dict.fromkeys(targets):
                # a module reaching its own package's __init__ is Python loading the package first, no cycle
                if target and target != module and not module.startswith(target + "."):
                    edges.append(Edge(module, target, f"{path.relative_to(root)}:{node.lineno}"))
    return edges


def package_edges(edges: list[Edge]) -> list[Edge]:
    """The same imports between packages (imports inside one package dropped)."""
    return [Edge(package_of(e.source), package_of(e.target), e.where) for e in edges
            if package_of(e.source) != package_of(e.target)]


def cycles(edges: list[Edge]) -> list[str]:
    """One shortest cycle per knot (strongly connected component) of the graph, each hop with its import line."""
    graph: dict[str, dict[str, str]] = {}
    for e in edges:
        graph.setdefault(e.source, {}).setdefault(e.target, e.where)
        graph.setdefault(e.target, {})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    knots: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            knot = []
            while True:
                w = stack.pop()
                knot.append(w)
                if w == v:
                    break
            if len(knot) > 1:
                knots.append(sorted(knot))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    found = []
    for knot in knots:
        start, inside = knot[0], set(knot)
        came_from: dict[str, str] = {}
        queue = deque([start])
        while queue:  # breadth first inside the knot, back to start
            v = queue.popleft()
            if start in graph[v]:
                path = [v]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                path = path[::-1] + [start]
                break
            for w in sorted(graph[v]):
                if w in inside and w not in came_from and w != start:
                    came_from[w] = v
                    queue.append(w)
        hops = "".join(f"\n    {a} -> {b}  ({graph[a][b]})" for a, b in zip(path, path[1:], strict=False))
        found.append(f"{', '.join(knot)}:{hops}")
    return found


def layer_violations(edges: list[Edge]) -> list[str]:
    """Each package import that is not downwards (or a sideways import its layer allows), named with its rule."""
    layer = {pkg: (k, name) for k, (name, pkgs) in enumerate(LAYERS) for pkg in pkgs}
    sideways = {pkg: also for _, pkgs in LAYERS for pkg, also in pkgs.items()}
    out = []
    for pkg in sorted({e.source for e in edges} | {e.target for e in edges} - set(layer)):
        if pkg not in layer:
            out.append(f"{pkg} is in no layer: place it in LAYERS (tests/test_layers.py) and in docs/design.md")
    for e in edges:
        if e.source not in layer or e.target not in layer:
            continue
        (k, name), (j, target_name) = layer[e.source], layer[e.target]
        if j < k or e.target in sideways[e.source]:
            continue
        if j > k:
            rule = "a layer imports only the layers below it"
        elif sideways[e.source]:
            rule = f"inside '{name}' it may import only {', '.join(sorted(sideways[e.source]))}"
        else:
            rule = f"inside '{name}' it imports no other package (LAYERS lists the ones allowed)"
        out.append(f"{e.where}: {e.source} ('{name}') imports {e.target} ('{target_name}'): {rule}")
    return list(dict.fromkeys(out))  # in file order, each import line once


@pytest.fixture(scope="module")
def project() -> list[Edge]:
    return imports(ROOT)


def test_no_file_imports_itself_back(project):
    found = cycles(project)
    assert not found, "import cycles between files:\n" + "\n".join(found)


def test_packages_form_layers(project):
    edges = package_edges(project)
    found = cycles(edges)
    assert not found, "import cycles between packages:\n" + "\n".join(found)
    wrong = layer_violations(edges)
    assert not wrong, "imports against the layers (docs/design.md, \"Layers\"):\n" + "\n".join(wrong)


def test_every_package_has_a_layer():
    packages = {package_of(module_name(f, ROOT)) for top in SOURCES for f in (ROOT / top).rglob("*.py")}
    listed = {pkg for _, pkgs in LAYERS for pkg in pkgs}
    assert packages - listed == set(), (f"packages in no layer: {sorted(packages - listed)}; place each in LAYERS "
                                        "(tests/test_layers.py) and in docs/design.md")
    assert listed - packages == set(), f"LAYERS names packages that do not exist: {sorted(listed - packages)}"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_a_cycle_is_named_by_its_import_lines(tmp_path):
    # methods -> losses at top level; losses -> methods inside a function (line 3): a package cycle, and a file cycle
    root = _tree(tmp_path, {
        "pipeline/__init__.py": "",
        "pipeline/methods/__init__.py": "from .gift import Gift\n",
        "pipeline/methods/gift.py": "from pipeline.losses import cd\n\nclass Gift: ...\n",
        "pipeline/losses.py": "def cd():\n    '''x'''\n    from pipeline.methods import Gift\n",
        "pipeline/models.py": "import pipeline.losses\n",  # no cycle: models -> losses only
    })
    edges = imports(root)
    assert cycles(edges) == ["pipeline.losses, pipeline.methods, pipeline.methods.gift:"
                             "\n    pipeline.losses -> pipeline.methods  (pipeline/losses.py:3)"
                             "\n    pipeline.methods -> pipeline.methods.gift  (pipeline/methods/__init__.py:1)"
                             "\n    pipeline.methods.gift -> pipeline.losses  (pipeline/methods/gift.py:1)"]
    assert cycles(package_edges(edges)) == ["pipeline.losses, pipeline.methods:"
                                            "\n    pipeline.losses -> pipeline.methods  (pipeline/losses.py:3)"
                                            "\n    pipeline.methods -> pipeline.losses  (pipeline/methods/gift.py:1)"]
    # models (foundation) importing losses (parts) climbs a layer; so does losses -> methods
    assert layer_violations(package_edges(edges)) == [
        "pipeline/losses.py:3: pipeline.losses ('parts') imports pipeline.methods ('methods'): "
        "a layer imports only the layers below it",
        "pipeline/models.py:1: pipeline.models ('foundation') imports pipeline.losses ('parts'): "
        "a layer imports only the layers below it",
    ]


def test_sideways_imports_and_unplaced_packages(tmp_path):
    root = _tree(tmp_path, {
        "pipeline/clts/features.py": "from ..evaluation.evaluate import TestSet\n",  # allowed inside 'parts'
        "pipeline/evaluation/evaluate.py": "from pipeline.replay import streams\n",  # not allowed inside 'parts'
        "pipeline/replay/streams.py": "",
        "pipeline/prompts/adapter.py": "from pipeline import models\n",
        "pipeline/models.py": "",
    })
    assert layer_violations(package_edges(imports(root))) == [
        "pipeline.prompts is in no layer: place it in LAYERS (tests/test_layers.py) and in docs/design.md",
        "pipeline/evaluation/evaluate.py:1: pipeline.evaluation ('parts') imports pipeline.replay ('parts'): "
        "inside 'parts' it imports no other package (LAYERS lists the ones allowed)",
    ]
