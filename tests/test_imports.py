"""The package's import graph, built from the source with ast (every import, at module
level or inside a function): no circle, and the layers of docs/design.md hold."""

import ast
import os

import minimolkv

PACKAGE = os.path.dirname(minimolkv.__file__)

# docs/design.md's layers in the map's order: a module may import only from its own layer or
# an earlier one (above it in the map).
LAYERS = [
    ("validation", {"validate", "validate_run"}),
    ("primitives", {"ops", "kvbuffer", "files"}),
    ("blocks", {"attention", "ffn", "moe", "mole", "molkv", "ctxattn"}),
    ("model", {"model", "generate", "lut", "params"}),
    ("training", {"tokenizer", "corpora", "data", "optim", "run", "train", "checkpoint", "memory"}),
    ("checking", {"gradcheck", "gradcheck_layers"}),
]
def imports():
    """{module: set of package modules it imports}, modules named relative to the package."""
    graph = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            module = os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".")
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            found = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minimolkv"):
                    base = node.module[len("minimolkv."):] if node.module != "minimolkv" else ""
                    for alias in node.names:                 # from minimolkv import ops / from minimolkv.ops import x
                        target = f"{base}.{alias.name}".strip(".") if not base or base == "tools" else base
                        found.add(target)
                elif isinstance(node, ast.Import):
                    found |= {a.name[len("minimolkv."):] for a in node.names if a.name.startswith("minimolkv.")}
            graph[module] = {m for m in found if m != module and m not in ("", "tools")}
    return graph


def circles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    graph = imports()
    assert {"ops", "molkv", "model", "train", "tools.cli"} <= set(graph)
    assert "ops" in graph["molkv"] and "model" in graph["train"] and "run" in graph["checkpoint"]


def test_no_import_circle():
    assert circles(imports()) == []


def test_a_circle_is_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


def test_the_layers_of_the_design():
    graph, layer_of = imports(), {m: i for i, (_, ms) in enumerate(LAYERS) for m in ms}
    for module, targets in graph.items():
        if module.startswith("tools.") or module in ("__init__", "__main__"):
            continue
        assert module in layer_of, f"{module} is in no layer of docs/design.md"
        for target in targets:
            assert not target.startswith("tools."), f"{module} imports {target}: teaching code never imports tools/"
            assert layer_of[target] <= layer_of[module], (f"{module} ({LAYERS[layer_of[module]][0]}) imports "
                                                          f"{target} ({LAYERS[layer_of[target]][0]}), a later layer")
