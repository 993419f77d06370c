"""pyproject.toml's requires-python is true for pygen: every module parses with the floor's
grammar, and nothing 3.10+ is evaluated when a module is imported there (PEP 604 unions such
as `Path | None` in annotations are only allowed under `from __future__ import annotations`,
which keeps annotations as strings)."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "pygen").rglob("*.py"))
# typing names that do not exist before Python 3.10
TYPING_AFTER_39 = {"TypeAlias", "ParamSpec", "Concatenate", "TypeGuard", "Self", "LiteralString", "Never",
                   "Required", "NotRequired", "Unpack", "TypeVarTuple", "assert_never", "assert_type",
                   "reveal_type", "dataclass_transform", "override", "is_typeddict", "ReadOnly", "TypeIs"}


def floor():
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(r'^requires-python\s*=\s*">=\s*(\d+)\.(\d+)"', text, re.M)
    assert m, "requires-python not found"
    return int(m.group(1)), int(m.group(2))


def has_future_annotations(tree):
    return any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
               for n in tree.body)


def unions(node):
    return [n for n in ast.walk(node) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)]


def evaluated_annotations(tree):
    """Annotations Python evaluates when the module runs: those of functions (at def time),
    and of variables at module and class level (not inside functions)."""
    out = []

    def visit(body, in_function):
        for n in body:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = n.args
                out.extend(x.annotation for x in a.posonlyargs + a.args + a.kwonlyargs if x.annotation)
                out.extend(x.annotation for x in (a.vararg, a.kwarg) if x is not None and x.annotation)
                if n.returns:
                    out.append(n.returns)
                visit(n.body, True)
            elif isinstance(n, ast.ClassDef):
                visit(n.body, in_function)
            elif isinstance(n, ast.AnnAssign) and not in_function:
                out.append(n.annotation)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(n, field, []) or [], in_function)
    visit(tree.body, False)
    return out


def type_unions_outside_annotations(tree):
    """`X | None` and `int | str` in ordinary expressions (isinstance, aliases): 3.10+ at run time."""
    annotation_nodes = set()
    for n in ast.walk(tree):
        for ann in ([n.annotation] if isinstance(n, (ast.AnnAssign, ast.arg)) and n.annotation else []) + \
                   ([n.returns] if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.returns else []):
            annotation_nodes.update(id(x) for x in ast.walk(ann))
    typeish = {"None", "int", "str", "bytes", "float", "bool", "list", "dict", "tuple", "set", "type", "Path"}

    def is_type(x):
        return (isinstance(x, ast.Constant) and x.value is None) or (isinstance(x, ast.Name) and x.id in typeish) \
            or isinstance(x, ast.Subscript)
    return [n for n in unions(tree) if id(n) not in annotation_nodes and is_type(n.left) and is_type(n.right)]


def test_floor_is_declared():
    assert floor() >= (3, 9)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_module_runs_on_the_declared_floor(path):
    source = path.read_text()
    tree = ast.parse(source, filename=str(path), feature_version=floor())  # the floor's grammar
    problems = []
    if floor() < (3, 10):
        if not has_future_annotations(tree):
            problems += [f"line {u.lineno}: `{ast.unparse(u)}` in an annotation evaluated at import"
                         for ann in evaluated_annotations(tree) for u in unions(ann)]
        problems += [f"line {u.lineno}: `{ast.unparse(u)}` evaluated at run time"
                     for u in type_unions_outside_annotations(tree)]
        problems += [f"line {n.lineno}: typing.{a.name} is 3.10+" for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module == "typing"
                     for a in n.names if a.name in TYPING_AFTER_39]
    assert problems == [], f"{path.name}: " + "; ".join(problems)


def test_the_checks_see_what_they_look_for():
    """The checks above on small samples (so that a pass means something)."""
    bad = ast.parse("from pathlib import Path\nx: Path | None = None\ndef f(a: int | None) -> str | None: ...\n")
    assert len([u for ann in evaluated_annotations(bad) for u in unions(ann)]) == 3
    ok = ast.parse("def f():\n    y: int | None = None\n")
    assert [u for ann in evaluated_annotations(ok) for u in unions(ann)] == []
    assert has_future_annotations(ast.parse("from __future__ import annotations\n"))
    assert len(type_unions_outside_annotations(ast.parse("isinstance(x, int | None)\nA = str | bytes\nb = 1 | 2\n"))) == 2
