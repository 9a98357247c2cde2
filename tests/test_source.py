"""The source tree itself: string literals that were meant to be f-strings (issue 38's surrogate
line printed ``{info['classifier_hash']}`` literally). ruff's RUF027 misses that one (it is in
preview and skips subscripts), so this walks the tree: a plain string inside a function whose
``{…}`` sections all parse as expressions over the function's own local names, with valid format
specs, and that is no docstring and not formatted by ``.format``, is reported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = ("bench", "defenses", "attacks", "tools", "examples", "tests")
SPEC = re.compile(r"(.?[<>=^])?[+\- ]?z?#?0?\d*[,_]?(\.\d+)?[bcdeEfFgGnosxX%]?")


def _locals(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    names = {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)}
    return names | {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _meant_as_fstring(text: str, names: set[str]) -> bool:
    try:
        parsed = ast.parse("f" + repr(text), mode="eval").body
    except SyntaxError:
        return False
    used: set[str] = set()
    for part in ast.walk(parsed):
        if isinstance(part, ast.FormattedValue):
            spec = part.format_spec
            if spec is not None and not (
                isinstance(spec, ast.JoinedStr)
                and all(isinstance(v, ast.Constant) for v in spec.values)
                and SPEC.fullmatch("".join(str(v.value) for v in spec.values))  # type: ignore[attr-defined]
            ):
                return False
            used |= {n.id for n in ast.walk(part.value) if isinstance(n, ast.Name)}
    return bool(used) and used <= names


def missing_f(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    parent = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    out = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        names = _locals(fn)
        for node in ast.walk(fn):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str) and "{" in node.value):
                continue
            up = parent.get(node)
            if isinstance(up, (ast.Expr, ast.JoinedStr)) or (
                isinstance(up, ast.Attribute) and up.attr in ("format", "format_map")
            ):
                continue  # a docstring, a part of an f-string, a template formatted on the spot
            if _meant_as_fstring(node.value, names):
                out.append(f"{path}:{node.lineno}: {node.value!r}")
    return out


def test_no_string_is_an_fstring_without_its_f():
    found = [hit for tree in TREES for path in sorted((ROOT / tree).rglob("*.py")) for hit in missing_f(path)]
    assert not found, "string(s) meant as f-strings lack their f:\n" + "\n".join(found)


def test_the_check_sees_the_surrogate_lines_missing_f(tmp_path):
    """The line of bench/run/models.py before the fix, and its fix."""
    src = (
        "def surrogate(info):\n"
        "    print('[threat]' + ': surrogate weights {info[\"classifier_hash\"]} ({info[\"classifier_source\"]})')\n"
        "    print('{:>8}'.format(1), '{key: value}', '{other}')\n"
    )
    path = tmp_path / "old.py"
    path.write_text(src)
    assert len(missing_f(path)) == 1
    path.write_text(src.replace("+ ': surrogate", "+ f': surrogate"))
    assert missing_f(path) == []
