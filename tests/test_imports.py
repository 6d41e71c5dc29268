"""The library's import graph: no cycles between its modules, every module imports on its own terms,
and heavy frameworks are imported inside the functions that need them (STYLE.md, conventions 1)."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "deepresearch"


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = p.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """deepresearch modules `name` imports anywhere (function bodies included, `if TYPE_CHECKING:` not)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # annotations only: never executed
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(up + ([child.module] if child.module else []))
                # `from pkg import mod` imports the module pkg.mod
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    deps = set()
    for dep in found:
        while dep and dep not in modules:
            dep = dep.rpartition(".")[0]
        if dep and dep != name and dep.startswith("deepresearch"):
            deps.add(dep)
    return deps


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_library_modules():
    """Lazy (function-level) imports count: a cycle through them is still two modules that each need
    the other. Plugins a registry loads by name (deepresearch.registry) are not imports of the registry."""
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["deepresearch.synthesis.run"] >= {"deepresearch.agent.episode"}  # the parser sees imports
    cycles = _cycles(graph)
    details = ["  " + " ⇄ ".join(c) + "\n" + "\n".join(f"    {m} imports {sorted(graph[m] & set(c))}" for m in c)
               for c in cycles]
    assert not cycles, "import cycles between library modules:\n" + "\n".join(details)


def test_every_module_imports_without_heavy_frameworks():
    """In one fresh interpreter: every library module imports, and none pulls in flytekit (never in the
    library), or mlflow, ray, deepspeed, vllm (imported inside the functions that use them)."""
    script = (
        "import importlib, json, pkgutil, sys\n"
        "import deepresearch\n"
        "names = sorted(m.name for m in pkgutil.walk_packages(deepresearch.__path__, 'deepresearch.'))\n"
        "for n in names: importlib.import_module(n)\n"
        "heavy = [m for m in ('flytekit', 'mlflow', 'ray', 'deepspeed', 'vllm') if m in sys.modules]\n"
        "print(json.dumps({'modules': len(names), 'heavy': heavy}))\n"
    )
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["modules"] == len(_modules()) - 1  # every module but the package itself
    assert out["heavy"] == []
