"""No module outside a method's own package branches on that method's name (docs/architecture.md, the walls).

Read from the source with ``ast``, like test_imports.py: a comparison (``==``, ``!=``, ``in``,
``not in``, a ``match`` case) whose operand is a string literal equal to a registered method's name,
or a literal tuple/list/set holding one, is a branch on that method's name.  The method's
``MethodSpec`` capability (prunes, soft, uses_tau, calibration, patterns, ...) says it instead.
Only the method's own package, ``pdp/methods/<name>/``, may compare its name (and no other's);
the registry and the report are scanned like every other module.

The same strings name other things too (TrainConfig's ``pdp`` field, the ``dense`` export format
and runtime); those comparisons are listed in ``OTHER_MEANINGS`` by file and by the expression
compared, each with what the string means there.
"""
from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

from pdp_gpt2.pdp.core import registry

PKG = ROOT / "src" / "pdp_gpt2"
NAMES = frozenset(s.name for s in registry.BUILTIN)
METHODS = Path("pdp") / "methods"  # pdp/methods/<name>/: the package a method owns

# (path under src/pdp_gpt2, the expression compared with the literal) -> what the string means there
OTHER_MEANINGS = {
    ("train/flags.py", "f.name"): "TrainConfig's field 'pdp' (the PDPConfig), not the method",
    ("cli/train.py", "f.name"): "TrainConfig's field 'pdp' (the PDPConfig), not the method",
    ("train/resume.py", "k"): "the key 'pdp' of a run_config.json (the PDPConfig), not the method",
    ("train/rundir.py", "cfg.keys()"): "the key 'pdp' of a run_config.json (the PDPConfig), not the method",
    ("export/writer.py", "fmt"): "the export format 'dense'",
}


def _literal_names(node: ast.AST) -> list[str]:
    """Registered method names held by ``node``: a str constant, or a literal tuple/list/set of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in NAMES:
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [n for e in node.elts for n in _literal_names(e) if isinstance(e, ast.Constant)]
    return []


def owner(rel: str) -> str | None:
    """'pdp/methods/wanda/driver.py' -> 'wanda': the method whose own package holds the module."""
    parts = Path(rel).parts
    n = len(METHODS.parts)
    return parts[n] if parts[:n] == METHODS.parts and len(parts) > n + 1 else None


def name_comparisons(path: Path, rel: str) -> list[str]:
    """'rel:line: source' for every comparison of a registered method name in ``path`` (its own
    package's method's name excepted)."""
    source = path.read_text()
    own = owner(rel)

    def foreign(node) -> list[str]:
        return [n for n in _literal_names(node) if n != own]

    out = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for i, operand in enumerate(operands):
                if not foreign(operand):
                    continue
                others = [ast.unparse(o) for j, o in enumerate(operands) if j != i]
                if all((rel, o) in OTHER_MEANINGS for o in others):
                    continue
                out.append(f"{rel}:{node.lineno}: {ast.get_source_segment(source, node)}")
        elif isinstance(node, ast.MatchValue) and foreign(node.value):
            out.append(f"{rel}:{node.lineno}: case {ast.unparse(node.value)}")
    return sorted(out, key=lambda hit: int(hit.split(":")[1]))


def scan(root: Path = PKG) -> list[str]:
    return [hit for p in sorted(root.rglob("*.py")) for hit in name_comparisons(p, p.relative_to(root).as_posix())]


def test_the_builtin_names_are_what_is_scanned_for():
    assert {"pdp", "dense", "gmp", "magnitude", "wanda"} <= NAMES


def test_no_method_name_is_compared_outside_its_own_package():
    hits = scan()
    assert not hits, ("branches on a method's name outside pdp/methods/<name>/; ask its MethodSpec "
                      "(pdp_gpt2.pdp.core.registry) instead:\n  " + "\n  ".join(hits))


def test_every_listed_other_meaning_still_occurs():
    """An entry of OTHER_MEANINGS whose comparison is gone would silently allow a future one."""
    used = set()
    for rel, expr in OTHER_MEANINGS:
        tree = ast.parse((PKG / rel).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(_literal_names(o) for o in operands) and expr in map(ast.unparse, operands):
                    used.add((rel, expr))
    assert used == set(OTHER_MEANINGS), sorted(set(OTHER_MEANINGS) - used)


def test_a_name_comparison_is_caught(tmp_path):
    """The negative check: every shape of the branch the scan exists to stop, and what it leaves alone."""
    (tmp_path / "plugin_branch.py").write_text(
        "def f(cfg, r, lab, spec, fmt):\n"
        "    if cfg.method == 'wanda':\n"                       # 2: ==
        "        pass\n"
        "    if 'dense' != r.method:\n"                         # 4: the literal on the left
        "        pass\n"
        "    if lab in ('magnitude', 'gmp', 'wanda'):\n"       # 6: in a literal tuple
        "        pass\n"
        "    if r.method not in ['pdp']:\n"                     # 8: not in a literal list
        "        pass\n"
        "    if 0 < 1 and spec.name in {'gmp'}:\n"              # 10: in a literal set, inside a BoolOp
        "        pass\n"
        "    match cfg.method:\n"
        "        case 'pdp':\n"                                 # 13: a match case
        "            pass\n"
        "    hit = 'pdp' in lab, fmt == 'dense'\n"              # 15: a substring test; 'dense' outside writer.py
        "    fine = {'pdp': 1}['pdp'], cfg.method == 'pdpx', lab in ('x', 'y'), spec.prunes, not spec.uses_tau\n")
    hits = scan(tmp_path)
    assert [int(h.split(":")[1]) for h in hits] == [2, 4, 6, 8, 10, 13, 15, 15], hits
    assert hits[0] == "plugin_branch.py:2: cfg.method == 'wanda'"


def test_only_a_methods_own_package_may_compare_its_name(tmp_path):
    """The negative check for the packages: wanda's may name wanda, not gmp; nothing else may name wanda,
    the registry and the report included."""
    code = "def f(spec):\n    return spec.name == 'wanda'\n"
    for rel in ("pdp/methods/wanda/driver.py", "pdp/methods/wanda/sub/x.py", "pdp/methods/gmp/driver.py",
                "pdp/methods/wanda.py", "pdp/core/registry.py", "report/methods.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(code)
    (tmp_path / "pdp/methods/wanda/config.py").write_text("def g(m):\n    return m in ('wanda', 'gmp')\n")
    hits = scan(tmp_path)
    assert [h.split(":")[0] for h in hits] == ["pdp/core/registry.py", "pdp/methods/gmp/driver.py",
                                               "pdp/methods/wanda/config.py", "pdp/methods/wanda.py",
                                               "report/methods.py"], hits
    assert owner("pdp/methods/wanda/driver.py") == "wanda" and owner("pdp/methods/__init__.py") is None


def test_the_worked_example_in_docs_is_movements_registration():
    """docs/architecture.md shows movement's MethodSpec as the plugin route's example: it must be the real one."""
    import re

    section = (ROOT / "docs" / "architecture.md").read_text().split("## Methods as plugins", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    assert eval(code, {"MethodSpec": registry.MethodSpec}) == registry.get("movement")
