"""The import structure of the package, read from the source (nothing is imported): no import circles, and
no import that points up the layers (kernels and benchmarks never import the command line)."""
from __future__ import annotations

import ast
from pathlib import Path

import xlfast

ROOT = Path(xlfast.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ("xlfast",) + path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module → the xlfast modules it imports (anywhere in the file, function-level imports included)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_no_import_points_up_the_layers():
    graph = import_graph()
    lower = [m for m in graph if m.startswith(("xlfast.kernels", "xlfast.bench"))]
    assert lower and not {m: sorted(d) for m in lower if (d := {x for x in graph[m] if x.startswith("xlfast.cli")})}


def test_csls_and_subword_embed_backends_import_only_their_base():
    graph = import_graph()
    shared = {"xlfast", "xlfast.errors", "xlfast.kernels", "xlfast.kernels.nvcc"}
    for op, backends in {"csls": ("cpu", "numba", "reference", "device", "approx"),
                         "subword_embed": ("reference", "numba", "cpp", "triton", "cuda")}.items():
        for backend in backends:
            deps = graph[f"xlfast.kernels.{op}.{backend}"] - shared
            assert deps == {f"xlfast.kernels.{op}.base"}, (backend, deps)
    # the GPU backends share the device search's plumbing beside the base
    for backend in ("blocked", "triton", "cuda"):
        assert graph[f"xlfast.kernels.csls.{backend}"] - shared == {"xlfast.kernels.csls.base",
                                                                     "xlfast.kernels.csls.device"}
