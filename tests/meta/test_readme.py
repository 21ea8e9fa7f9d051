"""The README's first two bash blocks are what CI runs (.ci/run extracts them): keep them right."""
import re

from helpers import ROOT


def bash_blocks():
    return re.findall(r"^```bash\n(.*?)^```$", (ROOT / "README.md").read_text(), flags=re.S | re.M)


def test_first_block_installs_and_runs_the_main_job():
    first = bash_blocks()[0].strip()
    # eval: CI runs tests/data/test_lmeval.py in this venv (.ci/run), none of it skipped
    assert "pip install torch==2.13.0" in first and 'pip install -e ".[dev,wandb,eval]"' in first
    assert first.endswith("pdp-gpt2 train")  # the embedded default, no arguments


def test_second_block_is_the_test_command():
    assert bash_blocks()[1].strip() == '. .venv/bin/activate && python -m pytest -m "not slow" -n auto'


def test_ci_runs_the_first_two_blocks():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "for i in 1 2" in ci and "README.md" in ci
