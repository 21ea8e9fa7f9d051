"""docs/runs.md's table of the flags each method ignores is the registry's (MethodSpec capabilities)."""
from helpers import ROOT

from pdp_gpt2.pdp.core import registry
from pdp_gpt2.train import flags

DOC = ROOT / "docs" / "runs.md"


def ignored_table() -> str:
    order = [f.name for f in flags.fields()]
    rows = ["| method | lacks | ignores |", "|---|---|---|"]
    for spec in registry.BUILTIN:
        lacks = [c for c in registry.CAPABILITY_FLAGS if not getattr(spec, c)]
        ignored = sorted(spec.ignored_flags(), key=order.index)
        rows.append(f"| {spec.name} | {', '.join(f'`{c}`' for c in lacks) or '-'} | "
                    f"{', '.join(f'`--{n}`' for n in ignored) or 'nothing'} |")
    return "\n".join(rows)


def test_the_doc_has_both_sections_and_the_registrys_table():
    text = DOC.read_text()
    assert "## Sweeps\n" in text and "## Flags each method ignores\n" in text
    section = text.split("## Flags each method ignores\n")[1].split("\n## ")[0]
    assert ignored_table() in section, "docs/runs.md: paste the table tests/meta/test_runs_doc.py makes"


def test_the_table_says_what_the_issue_says():
    table = ignored_table()
    assert "| movement | `uses_tau` | `--tau`, `--tau_mode`, `--tau_schedule`, `--tau_final`, " \
           "`--improved_masking`, `--beta`, `--wanda_groups`, `--sparsegpt_blocksize`, `--sparsegpt_percdamp` |" in table
    assert "| pdp | - | `--wanda_groups`, `--sparsegpt_blocksize`, `--sparsegpt_percdamp` |" in table
