"""The prose stays on its diet: a README a newcomer can read, short module docstrings, and no
references to an issue tracker that is not in the repository (history goes to CHANGELOG.md)."""
import ast
import re

from helpers import ROOT

SRC = ROOT / "src" / "pdp_gpt2"
README_MAX_LINES = 250
DOCSTRING_MAX_LINES = 15
# "issue 22", "Issue 22", "issues 24", "(issue 25: 1)", "#22"; a CSS colour (color:#222;) is no reference
TRACKER = re.compile(r"\bissues? +#?\d+|(?<![\w&#:])#\d{1,4}\b(?![0-9a-fA-F;}])", re.IGNORECASE)


def module_docstring_lines(path) -> int:
    tree = ast.parse(path.read_text())
    first = tree.body[0] if tree.body else None
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return 0
    return first.end_lineno - first.lineno + 1


def tracker_hits(text: str) -> list[tuple[int, str]]:
    return [(n, m.group(0)) for n, line in enumerate(text.splitlines(), 1) for m in TRACKER.finditer(line)]


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines: move detail to a docs/ page"


def test_no_module_docstring_is_long():
    long = {str(p.relative_to(ROOT)): n for p in sorted(SRC.rglob("*.py"))
            if (n := module_docstring_lines(p)) > DOCSTRING_MAX_LINES}
    assert not long, f"module docstrings over {DOCSTRING_MAX_LINES} lines (say what and why; history: CHANGELOG.md): {long}"


def test_no_tracker_references_in_code_or_tests():
    files = sorted(SRC.rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    found = [f"{p.relative_to(ROOT)}:{n}: {hit!r}" for p in files if p != ROOT / "tests/meta/test_prose.py"
             for n, hit in tracker_hits(p.read_text())]
    assert not found, "references to an issue tracker:\n" + "\n".join(found)


def test_the_checks_catch_what_they_are_for(tmp_path):
    text = "# see issue 22 and (issue 25: 1), fixed in #22 and Issues 24\nCSS = 'color:#222;' or &#39;\n"
    assert tracker_hits(text) == [(1, "issue 22"), (1, "issue 25"), (1, "#22"), (1, "Issues 24")]
    f = tmp_path / "m.py"
    f.write_text('"""One line."""\nx = 1\n')
    assert module_docstring_lines(f) == 1
    f.write_text('"""' + "\n" * 16 + '"""\nx = 1\n')
    assert module_docstring_lines(f) == 17
    f.write_text("x = 1\n")
    assert module_docstring_lines(f) == 0
