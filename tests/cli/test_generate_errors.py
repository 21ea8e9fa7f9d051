"""`pdp-gpt2 generate`: bad flags are one line and exit 2, before any token is generated."""
from __future__ import annotations

import pytest

from pdp_gpt2.cli import main

PROMPT = "to be or not"


def _refused(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err
    return err


@pytest.fixture
def gen(tiny_assets):
    model_dir, _ = tiny_assets
    return ["generate", str(model_dir), "--prompt", PROMPT, "--max_new_tokens", "3"]


def _prompt_tokens(model_dir) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(model_dir)(PROMPT).input_ids)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "-0.5", "1e-300"])
def test_temperature_must_be_zero_or_a_usable_positive_number(capsys, gen, value):
    # inf was a RuntimeError traceback; nan was silently greedy; 1e-300 overflowed the logits.
    err = _refused(capsys, gen + [f"--temperature={value}"], "--temperature")
    assert value.lstrip("-") in err.lower()


@pytest.mark.parametrize("flag, value, needle", [
    ("--seed", "-1", "--seed"), ("--seed", str(2 ** 70), "--seed"),
    ("--num_threads", "-1", "--num_threads"), ("--num_threads", "100000", "--num_threads"),
    ("--max_new_tokens", "0", "--max_new_tokens"),
])
def test_other_flags_are_checked(capsys, gen, flag, value, needle):
    _refused(capsys, gen + [f"{flag}={value}"], needle)


def test_request_beyond_the_context_is_refused_with_the_largest_that_fits(capsys, tiny_assets):
    model_dir, _ = tiny_assets  # n_positions 64
    n = _prompt_tokens(model_dir)
    argv = ["generate", str(model_dir), "--prompt", PROMPT, "--max_new_tokens"]
    err = _refused(capsys, argv + ["100000"], "--max_new_tokens 100000")  # was an IndexError traceback
    assert f"context of 64 tokens" in err and f"at most {64 - n}" in err
    _refused(capsys, argv + [str(64 - n + 1)], f"at most {64 - n}")
    assert main(argv + [str(64 - n)]) == 0  # exactly the context: allowed
    out = capsys.readouterr().out
    assert "decode" in out


def test_temperature_zero_is_greedy_and_documented(capsys, gen):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    help_ = " ".join(capsys.readouterr().out.split())
    assert "0 = greedy" in help_ and "context" in help_
    assert main(gen + ["--temperature", "0"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert main(gen + ["--temperature", "0", "--seed", "7"]) == 0  # greedy ignores the seed
    assert capsys.readouterr().out.splitlines()[0] == first
