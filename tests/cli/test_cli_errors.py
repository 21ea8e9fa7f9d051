"""Bad input: one line on stderr naming the bad value, exit 2, no traceback, nothing written."""
import pytest

from pdp_gpt2.cli import main


@pytest.fixture
def base(tmp_path, tiny_assets):
    model_dir, corpus = tiny_assets
    out = tmp_path / "out"
    return out, ["train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
                 "--max_steps", "2", "--max_length", "32", "--progress", "false"]


def _check(capsys, argv, out, needle, *, rc=2):
    with pytest.raises(SystemExit) as e:
        code = main(argv)
        raise SystemExit(code)
    assert e.value.code == rc
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and needle in err, err
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("flags, needle", [
    (["--sparsity", "1.0"], "sparsity"), (["--sparsity", "-0.2"], "sparsity"),
    (["--tau", "0"], "tau"), (["--tau", "-1"], "tau"),
    (["--bits", "9", "--quantize"], "bits"), (["--bits", "1"], "bits"),
    (["--beta", "0", "--improved_masking"], "beta"),
    (["--pattern", "3:2"], "3:2"), (["--pattern", "blocky"], "blocky"),
    (["--pattern", "2:4", "--sparsity", "0.9"], "2:4"),
    (["--schedule", "exp"], "exp"), (["--method", "lottery"], "lottery"),
    (["--bits", "eight"], "eight"),
    (["--max_length", "4096"], "4096"),
])
def test_bad_values(capsys, base, flags, needle):
    out, argv = base
    _check(capsys, argv + flags, out, needle)


def test_missing_model_dir(capsys, base, tmp_path):
    out, argv = base
    _check(capsys, argv + ["--model", str(tmp_path / "nope")], out, "nope")


def test_unreachable_hub_id(capsys, base, monkeypatch):
    out, argv = base
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _check(capsys, argv + ["--model", "no-such-org/no-such-model"], out, "local")


def test_missing_and_empty_dataset(capsys, base, tmp_path):
    out, argv = base
    _check(capsys, argv + ["--dataset", str(tmp_path / "missing.txt")], out, "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    _check(capsys, argv + ["--dataset", str(empty)], out, "empty")


def test_output_dir_with_another_run_is_not_touched(capsys, base):
    out, argv = base
    out.mkdir()
    (out / "keep.txt").write_text("previous run")
    _check(capsys, argv, out, "--overwrite_output_dir")
    assert (out / "keep.txt").read_text() == "previous run"


def test_resume_without_checkpoint(capsys, base):
    out, argv = base
    _check(capsys, argv + ["--resume"], out, "checkpoint")
