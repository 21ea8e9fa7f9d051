"""The import walls (docs/architecture.md), read from the source with ``ast``: no module is imported.

Every ``import``/``from ... import`` of ``pdp_gpt2`` counts, at the top of a module or inside a
function (a lazy import is still a dependency).  Cycles are checked on module-level imports,
the ones that run when a module is first imported.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

SRC = ROOT / "src"
PKG = SRC / "pdp_gpt2"

# Which parts of pdp_gpt2 each part may import (a prefix allows the module and everything under it).
# Each subpackage's __init__ docstring states the same rule in words (test_docstrings_state_these_rules).
ALLOWED = {
    # errors, atomic, names: leaves that import nothing
    "pdp": ("pdp_gpt2.pdp", "pdp_gpt2.errors", "pdp_gpt2.atomic", "pdp_gpt2.names"),
    "data": ("pdp_gpt2.data", "pdp_gpt2.errors", "pdp_gpt2.atomic", "pdp_gpt2.names"),
    "train": ("pdp_gpt2.train", "pdp_gpt2.pdp", "pdp_gpt2.data", "pdp_gpt2.errors", "pdp_gpt2.atomic",
              "pdp_gpt2.names"),
    "export": ("pdp_gpt2.export", "pdp_gpt2.pdp", "pdp_gpt2.data", "pdp_gpt2.errors", "pdp_gpt2.atomic",
               "pdp_gpt2.names"),
    # report reads run outputs (files); of the core only the method registry (torch-free), never training
    "report": ("pdp_gpt2.report", "pdp_gpt2.errors", "pdp_gpt2.atomic", "pdp_gpt2.pdp.core.registry",
               "pdp_gpt2.pdp.registry"),  # the last: the registry's old path
    # FSDP2 for your own loop: library code on top of the core, below every app layer
    "fsdp": ("pdp_gpt2.pdp", "pdp_gpt2.errors", "pdp_gpt2.atomic", "pdp_gpt2.names"),
    "cli": ("pdp_gpt2",),
    "atomic": (),
    "errors": (),
    "names": (),
    # `import pdp_gpt2` is the public API: the core, the loader, errors; never the training or app code.
    "__init__": ("pdp_gpt2.pdp", "pdp_gpt2.fsdp", "pdp_gpt2.export", "pdp_gpt2.errors"),
    "__main__": ("pdp_gpt2.cli",),
}
SUBPACKAGES = ("pdp", "data", "train", "export", "report", "cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def part_of(module: str) -> str:
    """'pdp_gpt2.train.run' -> 'train'; 'pdp_gpt2' -> '__init__'; 'pdp_gpt2.atomic' -> 'atomic'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _resolve(base: str, names: list[str]) -> list[str]:
    """``from base import a, b``: a name that is a module is that module, otherwise base itself."""
    return list(dict.fromkeys(f"{base}.{n}" if f"{base}.{n}" in MODULES else base for n in names)) or [base]


def imports_of(module: str) -> list[tuple[str, int, bool]]:
    """(imported pdp_gpt2 module, line, at module level) for every import in ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, top) for a in child.names if a.name.split(".")[0] == "pdp_gpt2")
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: from .x import y
                    base = package.split(".")
                    base = ".".join(base[: len(base) - child.level + 1] + ([child.module] if child.module else []))
                else:
                    base = child.module or ""
                if base.split(".")[0] == "pdp_gpt2":
                    out.extend((m, child.lineno, top) for m in _resolve(base, [a.name for a in child.names]))
            visit(child, inner)

    visit(tree, True)
    return out


def _allowed(src_part: str, target: str) -> bool:
    return any(target == p or target.startswith(p + ".") for p in ALLOWED[src_part])


def forbidden_edges() -> list[str]:
    bad = []
    for module in MODULES:
        part = part_of(module)
        for target, line, _ in imports_of(module):
            if not _allowed(part, target):
                bad.append(f"{module} (line {line}) imports {target}")
    return bad


def test_every_module_belongs_to_a_part_with_a_rule():
    assert {part_of(m) for m in MODULES} <= set(ALLOWED), sorted({part_of(m) for m in MODULES} - set(ALLOWED))


def test_the_walker_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    fake = tmp_path / "x.py"
    fake.write_text("import os\nfrom pdp_gpt2.pdp.kernels import mask\nfrom . import callback\n"
                    "def f():\n    from pdp_gpt2.data.sources import load_split_texts\n"
                    "class C:\n    import pdp_gpt2.train.run\n")
    monkeypatch.setitem(MODULES, "pdp_gpt2.pdp.x", fake)
    assert imports_of("pdp_gpt2.pdp.x") == [("pdp_gpt2.pdp.kernels.mask", 2, True), ("pdp_gpt2.pdp.callback", 3, True),
                                            ("pdp_gpt2.data.sources", 5, False), ("pdp_gpt2.train.run", 7, True)]
    assert not _allowed("pdp", "pdp_gpt2.data.sources") and _allowed("pdp", "pdp_gpt2.pdp.kernels.mask")
    assert not _allowed("report", "pdp_gpt2.train.config") and not _allowed("report", "pdp_gpt2.train.run")
    assert _allowed("report", "pdp_gpt2.pdp.core.registry") and not _allowed("report", "pdp_gpt2.pdp.core.attach")
    assert not _allowed("report", "pdp_gpt2.pdp")  # the registry, not the core it sits in


def test_no_forbidden_import_edges():
    bad = forbidden_edges()
    assert not bad, "imports that break the walls (docs/architecture.md):\n  " + "\n  ".join(bad)


def test_a_report_module_importing_training_is_caught(tmp_path, monkeypatch):
    """The wall the sweep runner used to break: report -> train, at the top or inside a function."""
    fake = tmp_path / "leak.py"
    fake.write_text("from pdp_gpt2.report import plots\nfrom pdp_gpt2.train.config import TrainConfig\n"
                    "def f():\n    from pdp_gpt2.train import run\n")
    monkeypatch.setitem(MODULES, "pdp_gpt2.report.leak", fake)
    assert [e for e in forbidden_edges() if e.startswith("pdp_gpt2.report.leak ")] == [
        "pdp_gpt2.report.leak (line 2) imports pdp_gpt2.train.config",
        "pdp_gpt2.report.leak (line 4) imports pdp_gpt2.train.run"]


# ---- transitive: what importing a module really loads (ast cannot see through other packages) ----

# The plain schemas (report, sweeps and the CLI's --help read them) and the package itself.
TORCH_FREE = ("pdp_gpt2", "pdp_gpt2.pdp.core.config", "pdp_gpt2.pdp.methods.pdp.config", "pdp_gpt2.train.config", "pdp_gpt2.pdp.core.registry",
              "pdp_gpt2.train.flags", "pdp_gpt2.pdp.config", "pdp_gpt2.pdp.registry")  # the last two: old paths


def heavy_modules_loaded_by(module: str, path: Path | None = None) -> list[str]:
    """Which of torch / transformers a fresh interpreter has loaded after ``import module``."""
    code = (f"import importlib, sys; importlib.import_module({module!r}); "
            "print(' '.join(m for m in ('torch', 'transformers') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(path or ""), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.split()


@pytest.mark.parametrize("module", TORCH_FREE)
def test_schema_modules_load_no_torch(module):
    assert heavy_modules_loaded_by(module) == []


def test_a_schema_that_loads_torch_is_caught(tmp_path):
    """The check above sees through imports: a schema whose import reaches torch two modules down.
    A stand-in torch.py (first on the path of that interpreter only) keeps this test fast."""
    (tmp_path / "leaky_schema.py").write_text("import dataclasses\nimport leaky_helper\n")
    (tmp_path / "leaky_helper.py").write_text("import torch\n")
    (tmp_path / "torch.py").write_text('"""stands in for torch: only its name in sys.modules matters here"""\n')
    assert heavy_modules_loaded_by("leaky_schema", tmp_path) == ["torch"]
    (tmp_path / "leaky_helper.py").write_text("import json\n")
    assert heavy_modules_loaded_by("leaky_schema", tmp_path) == []


def test_nothing_outside_the_cli_imports_it():
    bad = [f"{m} imports {t}" for m in MODULES if part_of(m) not in ("cli", "__main__")
           for t, _, _ in imports_of(m) if t == "pdp_gpt2.cli" or t.startswith("pdp_gpt2.cli.")]
    assert not bad, bad


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_by_hand():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    # A package's own __init__ is not an edge of its modules (importing pdp_gpt2.x.y runs
    # pdp_gpt2.x first by Python's rules, not by our choice).
    return {m: {t for t, _, top in imports_of(m) if (top or not module_level_only) and t != m
                and not m.startswith(t + ".")} for m in MODULES}


def test_no_import_cycles_at_module_level():
    assert _cycles(_graph(module_level_only=True)) == []


def test_no_import_cycles_even_through_lazy_imports():
    """A function-level import that closes a cycle only hides it (compressed <-> nm24 was one)."""
    assert _cycles(_graph(module_level_only=False)) == []


def _rule_paragraph(part: str) -> str:
    doc = ast.get_docstring(ast.parse((PKG / part / "__init__.py").read_text())) or ""
    m = re.search(r"Import rule:(.*?)(?:\n\s*\n|\Z)", doc, re.S)
    assert m, f"pdp_gpt2/{part}/__init__.py: the docstring has no 'Import rule:' paragraph"
    return m.group(1)


@pytest.mark.parametrize("part", SUBPACKAGES)
def test_docstrings_state_these_rules(part):
    """What the docstring allows (the ``pdp_gpt2.x`` names before 'never') is what ALLOWED allows."""
    allowed_text = re.split(r"\b[Nn]ever\b", _rule_paragraph(part))[0]
    named = {n.rstrip(".*") for n in re.findall(r"``(pdp_gpt2(?:\.[\w*]+)*)``", allowed_text)}
    assert named == set(ALLOWED[part]), (part, sorted(named), ALLOWED[part])


# ---- the floors inside the core: kernels < patterns < core < methods < callback ----

# A module may import its own floor or one below: config is the flat PDPConfig, made of the methods'
# configs.  The other modules directly in pdp/ are old import paths kept for importers outside the
# core: above every floor, imported by none.
PDP_FLOORS = ("kernels", "patterns", "core", "methods", "config", "callback")


def pdp_floor(module: str) -> int | None:
    """'pdp_gpt2.pdp.core.driver' -> 2; an old path ('pdp_gpt2.pdp.registry') -> len(PDP_FLOORS);
    None outside pdp/ and for pdp/__init__."""
    parts = module.split(".")
    if parts[:2] != ["pdp_gpt2", "pdp"] or len(parts) < 3:
        return None
    return PDP_FLOORS.index(parts[2]) if parts[2] in PDP_FLOORS else len(PDP_FLOORS)


def pdp_floor_breaks() -> list[str]:
    bad = []
    for module in MODULES:
        floor = pdp_floor(module)
        if floor is None:
            continue
        for target, line, _ in imports_of(module):
            t = pdp_floor(target)
            if t is not None and t > floor:
                bad.append(f"{module} (line {line}) imports {target}, a floor above it")
            if floor == t == PDP_FLOORS.index("methods") and module.split(".")[3] != target.split(".")[3]:
                bad.append(f"{module} (line {line}) imports {target}: a method imports no other method")
    return bad


def test_the_core_keeps_its_floors():
    assert pdp_floor_breaks() == []


def test_a_floor_break_is_caught(tmp_path, monkeypatch):
    fake = tmp_path / "leak.py"
    fake.write_text("from pdp_gpt2.pdp.methods.pdp.mask import PDPMask\nfrom pdp_gpt2.pdp import callback\n"
                    "from pdp_gpt2.pdp.kernels import mask\n")
    monkeypatch.setitem(MODULES, "pdp_gpt2.pdp.core.leak", fake)
    other = tmp_path / "other.py"
    other.write_text("from pdp_gpt2.pdp.methods.gmp.driver import GMP\nfrom pdp_gpt2.pdp.core.hard import HardMask\n")
    monkeypatch.setitem(MODULES, "pdp_gpt2.pdp.methods.wanda.other", other)
    assert [e for e in pdp_floor_breaks() if ".leak " in e or ".other " in e] == [
        "pdp_gpt2.pdp.core.leak (line 1) imports pdp_gpt2.pdp.methods.pdp.mask, a floor above it",
        "pdp_gpt2.pdp.core.leak (line 2) imports pdp_gpt2.pdp.callback, a floor above it",
        "pdp_gpt2.pdp.methods.wanda.other (line 1) imports pdp_gpt2.pdp.methods.gmp.driver: a method imports no other method"]


OLD_PATHS = ("registry", "mask", "targets", "sharded", "fused", "optim", "schedule", "driver")


@pytest.mark.parametrize("name", OLD_PATHS)
def test_an_old_path_is_the_moved_module_itself(name):
    """Importers outside the core (and plugins) written against the flat pdp/ keep working, and a
    monkeypatch through the old name reaches the module the core uses."""
    import importlib

    old = importlib.import_module(f"pdp_gpt2.pdp.{name}")
    assert old.__name__.split(".")[2] in ("core", "kernels") and old.__name__.endswith("." + name)
    assert old is importlib.import_module(old.__name__)


def test_the_old_composite_paths_name_the_moved_classes():
    from pdp_gpt2.pdp import attach as old_attach, baselines
    from pdp_gpt2.pdp.core.attach import attach, method_record
    from pdp_gpt2.pdp.core.hard import HardMask
    from pdp_gpt2.pdp.methods.gmp.driver import GMP
    from pdp_gpt2.pdp.methods.pdp.driver import Pruner

    assert (old_attach.attach, old_attach.method_record, old_attach.Pruner) == (attach, method_record, Pruner)
    assert (baselines.HardMask, baselines.GMP) == (HardMask, GMP)
