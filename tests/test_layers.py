"""The architecture, enforced: which layer may import which, no import circle, no hidden imports.

Data flows one way — config → plan → execute → store → analyse → render — and the folders under
``bench/`` are those layers. ``LAYERS`` is the rule (docs/guides/architecture.md); this test reads
every module's imports with ``ast`` (nothing is imported) and fails on any import the rule does
not allow, on a circle among modules, and on a ``bench`` import hidden inside a function body.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# layer → the layers (and plugin packages) its modules may import. A layer may always import itself.
LAYERS: dict[str, set[str]] = {
    "bench.core": set(),
    "bench.builtin": {"bench.core"},
    "bench.store": {"bench.core"},
    "bench.analysis": {"bench.core", "bench.store"},
    "bench.render": {"bench.analysis", "bench.store", "bench.core"},
    "bench.run": {"bench.builtin", "bench.analysis", "bench.store", "bench.core", "attacks", "defenses"},
    "bench.api": {
        "bench.run",
        "bench.analysis",
        "bench.render",
        "bench.builtin",
        "bench.store",
        "bench.core",
        "attacks",
        "defenses",
    },
    "bench.cli": {
        "bench.api",
        "bench.run",
        "bench.render",
        "bench.analysis",
        "bench.builtin",
        "bench.store",
        "bench.core",
        "attacks",
        "defenses",
    },
    # bench/__init__.py, bench/__main__.py; bench.numerics (bench.core.numerics), set before torch loads
    "bench": {"bench.cli", "bench.api", "bench.core"},
    # The one import for plugin authors: the core and the plugin base classes (PLUGIN_API), nothing
    # of the runner, so a plugin written against it sees what a built-in sees.
    "bench.plugin": {"bench.core", "attacks", "defenses"},
    # Plugins see the core only: a plugin written against the registry and the tensor contract
    # keeps working whatever the runner, the store or the report become.
    "attacks": {"bench.core"},
    "defenses": {"bench.core"},
}
# Of the plugin packages, bench.plugin imports their base classes only (never a plugin).
PLUGIN_API = {"attacks.base", "defenses.base"}
# Imports deferred into a function body on purpose: (module, imported module) → why.
DEFERRED = {
    ("bench", "bench.api"): "bench.evaluate is resolved on first use: `import bench.core…` must not load the runner",
}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in ("bench", "attacks", "defenses"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "bench":
        return parts[0]
    if len(parts) > 1 and f"bench.{parts[1]}" in LAYERS:
        return f"bench.{parts[1]}"
    return "bench"


def imports(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported project module, line, inside a function body) for every import of ours."""
    tree = ast.parse(path.read_text(), str(path))
    inner = {
        id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f)
    }
    out = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from bench.core import identity` imports the module bench.core.identity
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names
            ]
        for name in names:
            if name.split(".")[0] in ("bench", "attacks", "defenses"):
                out.append((name, node.lineno, id(node) in inner))
    return out


def edges() -> dict[str, list[tuple[str, int, bool]]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_every_module_belongs_to_a_layer():
    for m in modules():
        assert layer_of(m) in LAYERS, m


def test_each_layer_imports_only_what_the_rule_allows():
    bad = []
    for m, imps in edges().items():
        mine = layer_of(m)
        for target, line, _ in imps:
            theirs = layer_of(target)
            if theirs != mine and theirs not in LAYERS[mine]:
                bad.append(f"{m}:{line} imports {target} ({mine} may import {sorted(LAYERS[mine]) or 'nothing'})")
    assert not bad, "\n".join(bad)


def test_the_plugin_api_imports_the_core_and_the_base_classes_only():
    imported = {t for t, _, _ in edges()["bench.plugin"]}
    assert imported, "bench.plugin imports nothing?"
    bad = sorted(t for t in imported if not t.startswith("bench.core") and t not in PLUGIN_API)
    assert not bad, f"bench.plugin imports {bad}: only bench.core and {sorted(PLUGIN_API)}"


def test_no_import_inside_a_function_body_unless_listed():
    bad = [
        f"{m}:{line} imports {t} inside a function"
        for m, imps in edges().items()
        for t, line, inner in imps
        if inner and (m, t) not in DEFERRED
    ]
    assert not bad, "\n".join(bad)


def test_no_import_circle():
    graph: dict[str, set[str]] = {}
    known = modules()
    for m, imps in edges().items():
        # A package's __init__ running its submodule is not a circle; a module importing a
        # package only needs that package's __init__.
        graph[m] = {t for t, _, inner in imps if t in known and t != m and not inner}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycle = [*stack[stack.index(t) :], t]
                pytest.fail("import circle: " + " → ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_rule_catches_a_violation(tmp_path):
    """The checker itself can fail: a core module importing the renderer is reported."""
    path = tmp_path / "x.py"
    path.write_text("from bench.render.report import write_report\n\ndef f():\n    from bench.run import driver\n")
    found = imports("bench.core.x", path, {"bench.render.report": path, "bench.run.driver": path})
    assert ("bench.render.report", 1, False) in found and ("bench.run.driver", 4, True) in found
    assert layer_of("bench.render.report") not in LAYERS["bench.core"]


# tools/ is a client of the library: it uses what a user's script may use, so the layers behind
# bench.api may move without breaking it. (An import deferred into a function is allowed there: a
# tool may set the numerics mode before torch loads, or keep a parent process light.)
TOOLS_MAY_IMPORT = {"bench", "bench.api", "bench.plugin"}


def tool_imports() -> list[tuple[str, str, int]]:
    out = []
    for path in sorted((ROOT / "tools").glob("*.py")):
        for name, line, _ in imports(f"tools.{path.stem}", path, {}):
            out.append((path.name, name, line))
    return out


def test_tools_import_the_library_through_its_public_surface_only():
    found = tool_imports()
    assert any(name == "bench.api" for _, name, _ in found), "no tool imports bench.api?"
    bad = [f"tools/{f}:{line} imports {name}" for f, name, line in found if name not in TOOLS_MAY_IMPORT]
    assert not bad, "tools/ may import " + ", ".join(sorted(TOOLS_MAY_IMPORT)) + ":\n" + "\n".join(bad)


def test_the_tools_rule_catches_an_internal_import(tmp_path):
    path = tmp_path / "t.py"
    path.write_text("from bench.api import Runner\n\ndef f():\n    from bench.run.driver import Runner\n")
    names = {n for n, _, _ in imports("tools.t", path, {})}
    assert names == {"bench.api", "bench.run.driver"} and not names <= TOOLS_MAY_IMPORT


def test_the_gpu_script_is_an_environment_check_and_a_packer():
    """Its plan is data (tools/gpu_plan.toml, run by the ordinary runner), so its code stays small."""
    lines = sum(len(p.read_text().splitlines()) for p in (ROOT / "tools").glob("gpu*.py"))
    assert lines <= 600, f"tools/gpu*.py: {lines} lines"
