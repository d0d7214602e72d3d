"""The import rules, read from the source (``ast``, function-level imports included):

* the ``trainer`` package has no import cycle;
* no package imports another package's private names (``from trainer.engine import _Run``,
  ``import trainer.engine as e; e._Run``, ``trainer.data._iter_tar``) or private modules;
  the packages are ``trainer``, ``recipe_search``, ``api`` and ``bench``;
* ``trainer`` imports no orchestration library (ray, optuna, mlflow, fastapi) and none of the
  packages built on it (recipe_search, api, bench);
* inside ``recipe_search`` the rooms are layered (:data:`ROOMS`, lowest first, as in
  docs/architecture.md): a module imports only its own layer and the layers below it.

Also a script: ``.venv/bin/python tests/test_imports.py`` prints every finding and exits 1 if any.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainer", "recipe_search", "api", "bench")
ORCHESTRATION = ("ray", "optuna", "mlflow", "fastapi")
# recipe_search's layers, lowest first: each entry names the rooms (subpackages) and top-level modules
# of one layer; "" is the package's own __init__. docs/architecture.md gives each room's contract.
ROOMS = (
    ("", "errors", "records"),
    ("config", "paths", "budget", "baselines", "compose", "fingerprint", "study_storage", "samplers", "incumbent",
     "settings", "state", "tracking", "known_results"),
    ("space",),
    ("verdict",),
    ("plan", "store"),
    ("tune",),
    ("report",),
    ("search",),
    ("cli", "__main__"),
)


@dataclass(frozen=True)
class Import:
    importer: str   # dotted module name of the importing file
    line: int
    target: str     # the imported module (absolute, dotted)
    names: tuple[str, ...] = ()  # for ``from target import a, b``


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_files(root: Path = ROOT, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the package folders."""
    out = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def _resolve(importer: str, is_package: bool, module: str | None, level: int) -> str:
    if not level:
        return module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(name: str, source: str, is_package: bool = False) -> tuple[list[Import], list[tuple[int, str]]]:
    """Every import in ``source`` (at any depth: functions, methods, ``if`` blocks) and every
    attribute read ``<module alias>.<attr>...`` as ``(line, dotted path)``."""
    tree = ast.parse(source)
    found: list[Import] = []
    aliases: dict[str, str] = {}  # local name -> dotted module it is bound to (module imports only)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                found.append(Import(name, node.lineno, a.name))
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    top = a.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, is_package, node.module, node.level)
            names = tuple(a.name for a in node.names)
            found.append(Import(name, node.lineno, target, names))
            for a in node.names:  # ``from trainer import engine``: engine may be a module
                aliases[a.asname or a.name] = f"{target}.{a.name}"
    reads = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, cur = [], node
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id in aliases:
                parts = [aliases[cur.id], *reversed(chain)]
                cut = next((i for i, p in enumerate(parts) if i and _is_private(p)), len(parts) - 1)
                reads.add((node.lineno, ".".join(parts[:cut + 1])))  # up to the first private part
    return found, sorted(reads)


@dataclass
class Graph:
    root: Path
    packages: tuple[str, ...]
    modules: dict[str, Path]
    imports: dict[str, list[Import]]
    reads: dict[str, list[tuple[int, str]]]

    def is_module(self, dotted: str) -> bool:
        return dotted in self.modules

    def edges(self, importer: str) -> dict[str, int]:
        """Modules of ours that ``importer`` makes Python import (target -> first line). A package's
        ``__init__`` counts, except an ancestor of the importer (already being imported)."""
        out: dict[str, int] = {}
        ancestors = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 2)}  # + itself

        def add(target: str, line: int, explicit: bool) -> None:
            parts = target.split(".")
            for i in range(1, len(parts)):  # parents run their __init__ first
                parent = ".".join(parts[:i])
                if parent not in ancestors and self.is_module(parent):
                    out.setdefault(parent, line)
            if self.is_module(target) and (explicit or target not in ancestors) and target != importer:
                out.setdefault(target, line)

        for imp in self.imports.get(importer, []):
            if not imp.names:
                add(imp.target, imp.line, explicit=True)
                continue
            submodules = [n for n in imp.names if self.is_module(f"{imp.target}.{n}")]
            for n in submodules:
                add(f"{imp.target}.{n}", imp.line, explicit=True)
            # names that are not submodules come from the target's own __init__ / module body
            add(imp.target, imp.line, explicit=len(submodules) < len(imp.names))
        return out


def build(root: Path = ROOT, packages=PACKAGES) -> Graph:
    files = module_files(root, packages)
    imports, reads = {}, {}
    for name, path in files.items():
        imports[name], reads[name] = imports_of(name, path.read_text(), path.name == "__init__.py")
    return Graph(root, tuple(packages), files, imports, reads)


def cycles(graph: Graph, package: str) -> list[list[str]]:
    """The import cycles among ``package``'s modules (Tarjan's strongly connected components)."""
    nodes = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    adj = {m: sorted(t for t in graph.edges(m) if t in nodes) for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in adj[v]:
                out.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def private_cross_package(graph: Graph, package: str) -> list[str]:
    """``file:line: text`` for each private name or module of another of our packages that ``package`` reaches."""
    out = []
    def foreign(dotted: str) -> bool:
        top = dotted.split(".")[0]
        return top in graph.packages and top != package

    for importer in sorted(m for m in graph.modules if m.split(".")[0] == package):
        where = graph.modules[importer].relative_to(graph.root)

        for imp in graph.imports[importer]:
            if not foreign(imp.target):
                continue
            private = [p for p in imp.target.split(".") if _is_private(p)]
            private += [n for n in imp.names if _is_private(n)]
            if private:
                what = f"from {imp.target} import {', '.join(imp.names)}" if imp.names else f"import {imp.target}"
                out.append(f"{where}:{imp.line}: {what}  (private: {', '.join(private)})")
        for line, dotted in graph.reads[importer]:
            if foreign(dotted) and any(_is_private(p) for p in dotted.split(".")):
                out.append(f"{where}:{line}: {dotted}")
    return sorted(set(out))


def forbidden_imports(graph: Graph, package: str, forbidden) -> list[str]:
    out = []
    for importer in sorted(m for m in graph.modules if m.split(".")[0] == package):
        for imp in graph.imports[importer]:
            if imp.target.split(".")[0] in forbidden:
                out.append(f"{graph.modules[importer].relative_to(graph.root)}:{imp.line}: imports {imp.target}")
    return out


def layer_of(module: str, package: str = "recipe_search", rooms=ROOMS) -> int | None:
    """The layer of a module of ``package`` (its room or top-level module), None if not listed."""
    room = module[len(package) + 1:].split(".")[0] if module != package else ""
    return next((i for i, names in enumerate(rooms) if room in names), None)


def layer_violations(graph: Graph, package: str = "recipe_search", rooms=ROOMS) -> list[str]:
    """``file:line: a -> b`` for each import (any depth) of a higher layer, and each unlisted module."""
    out = []
    for importer in sorted(m for m in graph.modules if m == package or m.startswith(package + ".")):
        where = graph.modules[importer].relative_to(graph.root)
        mine = layer_of(importer, package, rooms)
        if mine is None:
            out.append(f"{where}: not in any layer (add its room to ROOMS and to docs/architecture.md)")
            continue
        for target, line in graph.edges(importer).items():
            theirs = layer_of(target, package, rooms) if target.split(".")[0] == package else None
            if theirs is not None and theirs > mine:
                out.append(f"{where}:{line}: {importer} (layer {mine}) imports {target} (layer {theirs})")
    return out


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build()


@pytest.mark.parametrize("package", ["trainer", "recipe_search", "api"])
def test_no_import_cycle(graph, package):
    found = cycles(graph, package)
    assert not found, f"import cycles in {package}/ (function-level and type-only imports included):\n" + \
        "\n".join(" -> ".join(c) for c in found)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_private_names_imported_across_packages(graph, package):
    found = private_cross_package(graph, package)
    assert not found, (f"{package} uses private names of another package; give them a public name:\n"
                       + "\n".join(found))


def test_trainer_imports_no_orchestration_library_and_nothing_built_on_it(graph):
    found = forbidden_imports(graph, "trainer", ORCHESTRATION + ("recipe_search", "api", "bench"))
    assert not found, "trainer/ must run alone (python -m trainer):\n" + "\n".join(found)


def test_recipe_search_rooms_import_only_their_layer_and_below(graph):
    found = layer_violations(graph)
    assert not found, "recipe_search rooms import upward (see ROOMS and docs/architecture.md):\n" + "\n".join(found)


# -- the checker itself -----------------------------------------------------------------------

def _fake(tmp_path: Path, files: dict[str, str]) -> Graph:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return build(tmp_path, ("pkg", "other"))


def test_checker_sees_function_level_cycles_and_private_reads(tmp_path):
    g = _fake(tmp_path, {
        "pkg/__init__.py": "from .a import run\n",
        "pkg/a.py": "def run():\n    from .b import helper\n    return helper()\n",
        "pkg/b.py": "from . import a\ndef helper():\n    return 1\n",
        "pkg/sub/__init__.py": "from .x import X\n",
        "pkg/sub/x.py": "from .y import Y\nX = 1\n",
        "pkg/sub/y.py": "from ..b import helper\nY = 2\n",
        "other/__init__.py": "",
        "other/use.py": ("import pkg.a as pa\nfrom pkg.sub import x\n"
                         "def f():\n    from pkg.b import _hidden\n    return pa._secret, x._y, pa.run\n"),
    })
    assert cycles(g, "pkg") == [["pkg.a", "pkg.b"]]  # the package __init__s importing their own children are fine
    found = private_cross_package(g, "other")
    assert [f.split(": ", 1)[1] for f in found] == ["from pkg.b import _hidden  (private: _hidden)",
                                                    "pkg.a._secret", "pkg.sub.x._y"]
    assert private_cross_package(g, "pkg") == []
    layers = (("", "b"), ("a", "sub"))  # b below a, but b imports a; a's own imports are function-level
    assert [f.split(": ", 1)[1] for f in layer_violations(g, "pkg", layers)] == [
        "pkg (layer 0) imports pkg.a (layer 1)", "pkg.b (layer 0) imports pkg.a (layer 1)"]
    assert [f.split(": ", 1)[1] for f in layer_violations(g, "pkg", (("", "a", "b"),))] == [
        "not in any layer (add its room to ROOMS and to docs/architecture.md)"] * 3  # pkg.sub, .x, .y
    assert layer_violations(g, "pkg", (("", "a", "b", "sub"),)) == []


def main() -> int:
    g = build()
    problems = [f"cycle in trainer: {' -> '.join(c)}" for c in cycles(g, "trainer")]
    for package in PACKAGES:
        problems += private_cross_package(g, package)
    problems += forbidden_imports(g, "trainer", ORCHESTRATION + ("recipe_search", "api", "bench"))
    problems += layer_violations(g)
    print("\n".join(problems) or "imports ok: no trainer cycle, no private cross-package import, "
                                 "trainer imports no orchestration library")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
