"""docs/architecture.md's worked examples, run from the markdown itself (so the page and the test
cannot drift): each file of the example is written where its first line says, then imported."""
import argparse
import re
import sys

import pytest

import pdp_gpt2
from pdp_gpt2.pdp.core import registry

from helpers import ROOT, tiny_gpt2


def section(heading: str) -> list[str]:
    """The python blocks under ``### heading`` in docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    body = text.split(f"\n### {heading}\n", 1)[1]
    body = re.split(r"\n##+ ", body, maxsplit=1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def install(blocks: list[str], root) -> list[str]:
    """Write every block whose first line is '# <path>.py' there; run the others (the registration).
    Returns the top-level module names it made importable."""
    made = []
    for code in blocks:
        if m := re.match(r"# (\S+\.py)\n", code):
            path = root / m.group(1)
            path.parent.mkdir(parents=True, exist_ok=True)
            for d in path.relative_to(root).parents:  # packages all the way down
                if d.parts:
                    (root / d / "__init__.py").touch()
            path.write_text(code)
            made.append(path.relative_to(root).parts[0])
        else:
            exec(code, {})
    return sorted(set(made))


@pytest.fixture
def random_method(tmp_path, monkeypatch):
    """The new method of the doc's "A new method with its own config field", registered as the doc does."""
    blocks = section("A new method with its own config field")
    assert len(blocks) == 3  # its config, its driver, one registration line
    monkeypatch.syspath_prepend(str(tmp_path))
    made = install(blocks[:2], tmp_path)
    try:
        install(blocks[2:], tmp_path)  # the registration: the driver and config load on first use
        yield made
    finally:
        registry.unregister("random")
        for name in [n for n in sys.modules if n.split(".")[0] in made]:
            del sys.modules[name]


def test_the_new_method_attaches_with_its_own_config(random_method):
    from random_method.config import RandomConfig

    zeros = {}
    for seed in (0, 3):
        model = tiny_gpt2()
        driver = pdp_gpt2.attach(model, "random", RandomConfig(sparsity=0.5, random_seed=seed))
        assert type(driver.config) is RandomConfig and driver.config.random_seed == seed
        driver.finalize()
        w = model.transformer.h[0].mlp.c_fc.weight
        assert int((w == 0).sum()) == w.numel() // 2  # exactly half of every target
        zeros[seed] = w == 0
    assert not bool((zeros[0] == zeros[3]).all())  # the setting reached the driver: another mask
    flat = pdp_gpt2.attach(tiny_gpt2(), "random", pdp_gpt2.PDPConfig(sparsity=0.5))  # any config: its own part
    assert type(flat.config) is RandomConfig and flat.config.random_seed == 0


def test_the_cli_offers_its_setting_under_the_method(random_method, tmp_path, capsys):
    from pdp_gpt2.cli import main
    from pdp_gpt2.cli import train as train_cli

    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    groups = {part.split(":\n", 1)[0]: part for part in re.split(r"\n(?=\S[^\n]*:\n)", parser.format_help())}
    assert "--random_seed RANDOM_SEED" in groups["--method random"] and "seed for its scores" in groups["--method random"]
    assert "--random_seed" not in groups["pruning (every method)"] and "--wanda_groups" in groups["--method wanda"]
    cfg = train_cli.method_config(parser.parse_args(["--method", "random", "--random_seed", "3", "--sparsity", "0.5"]))
    assert type(cfg).__name__ == "RandomConfig" and (cfg.random_seed, cfg.sparsity) == (3, 0.5)
    assert train_cli.method_config(parser.parse_args(["--method", "random"])).random_seed == 0
    out = tmp_path / "run"  # a train run cannot record it yet: refused in one line, before any work
    assert main(["train", "--method", "random", "--random_seed", "3", "--model", str(tmp_path / "missing"),
                 "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--random_seed (--method random's own setting)" in err[0] and not out.exists()
