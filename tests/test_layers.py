"""The package's layering, read from the source: every import of every module under calbench/
(those inside functions too) is parsed with ``ast``. core and metrics import no client; the
clients eval, report and train import core and metrics, never each other nor the top-level
commands on them. Source files stay under 500 lines. (What the report commands import at run
time, torch never included, is tests/test_cli_startup.py's.)"""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO

PKG = REPO / "calbench"
CORE = ("core", "metrics")
CLIENTS = ("eval", "report", "train")
MAX_LINES = 500
# Files over MAX_LINES while another change splits them; an entry that no longer exists or has
# shrunk fails the test, so the list only ever shrinks.
OVERSIZE_ALLOWED: set[str] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _submodule(name: str) -> bool:
    """Whether ``calbench.a.b`` is a module or package in the source tree."""
    rel = Path(*name.split("."))
    return (REPO / rel).with_suffix(".py").is_file() or (REPO / rel / "__init__.py").is_file()


def _string_constants(tree: ast.Module) -> dict[str, str]:
    out = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            out.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return out


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in ``path``: ``import``/``from`` statements
    anywhere in the file, and ``importlib.import_module``/``find_spec`` calls whose argument is
    a string literal or a module-level string constant."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module, is_pkg = _module_name(path), _is_package(path)
    consts = _string_constants(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, module, is_pkg)
            found.append((node.lineno, target))
            # `from calbench import metrics` imports calbench.metrics
            found += [
                (node.lineno, f"{target}.{a.name}")
                for a in node.names
                if _submodule(f"{target}.{a.name}")
            ]
        elif isinstance(node, ast.Call) and node.args:
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ("import_module", "find_spec"):
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.append((node.lineno, arg.value))
                elif isinstance(arg, ast.Name) and arg.id in consts:
                    found.append((node.lineno, consts[arg.id]))
    return [(line, m) for line, m in found if m == "calbench" or m.startswith("calbench.")]


def layer(module: str) -> str:
    """core, metrics, eval, report, train, tasks; "root" for the package itself; "top" for the
    modules on top of the clients (cli, reproduce, regrade, api, the parse/grade re-exports)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    if parts[1] in (*CORE, *CLIENTS, "tasks"):
        return parts[1]
    return "top"


def sources() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def violations() -> list[str]:
    out = []
    for path in sources():
        here = layer(_module_name(path))
        if here in CORE:
            allowed = {*CORE, "root"}
        elif here in CLIENTS:
            allowed = {*CORE, "root", here}
        else:
            continue
        rel = path.relative_to(REPO)
        for line, target in imports_of(path):
            if layer(target) not in allowed:
                out.append(f"{rel}:{line}: calbench.{here} imports {target}")
    return out


def test_import_parser_sees_every_form(tmp_path, monkeypatch):
    """The parser itself, on a module written for it: a test that could not fail is no test."""
    pkg = tmp_path / "calbench" / "report"
    pkg.mkdir(parents=True)
    (tmp_path / "calbench" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (tmp_path / "calbench" / "train").mkdir()
    (tmp_path / "calbench" / "train" / "__init__.py").write_text("")
    (tmp_path / "calbench" / "metrics.py").write_text("")
    mod = pkg / "x.py"
    mod.write_text(
        textwrap.dedent("""
        import json
        from calbench import metrics
        from . import y
        from ..train import common
        MOD = "calbench.eval.evaluate"
        def f():
            import calbench.eval.harness
            import importlib
            importlib.import_module(MOD)
            return importlib.util.find_spec("calbench.regrade")
    """)
    )
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    got = [m for _, m in imports_of(mod)]
    assert got.count("calbench.metrics") == 1 and "calbench" in got
    assert {
        "calbench.report",
        "calbench.train",
        "calbench.eval.harness",
        "calbench.eval.evaluate",
        "calbench.regrade",
    } <= set(got)
    assert [
        layer(m)
        for m in ("calbench", "calbench.cli", "calbench.core.grade", "calbench.train.common")
    ] == ["root", "top", "core", "train"]
    monkeypatch.setattr(sys.modules[__name__], "PKG", tmp_path / "calbench")
    assert sorted(violations()) == sorted(
        [
            "calbench/report/x.py:5: calbench.report imports calbench.train",
            "calbench/report/x.py:8: calbench.report imports calbench.eval.harness",
            "calbench/report/x.py:10: calbench.report imports calbench.eval.evaluate",
            "calbench/report/x.py:11: calbench.report imports calbench.regrade",
        ]
    )


def test_clients_never_import_each_other_and_core_imports_no_client():
    assert sources(), PKG
    assert violations() == []


def test_source_files_stay_short():
    lines = {
        str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines()) for p in sources()
    }
    too_long = {f: n for f, n in lines.items() if n > MAX_LINES}
    assert too_long == {}, f"files over {MAX_LINES} lines: {too_long}"
