"""lm-eval scores in the report: runs made with --eval_tasks show their task scores per variant and
sparsity next to the perplexity (report.md, report.html, a slide whose title states the finding);
runs without them leave the report exactly as it was."""
import json
import re

import pytest

from pdp_gpt2.report import report as R
from pdp_gpt2.report import slides, tasks
from pdp_gpt2.report.report import collect, write_report

LAYERS = ["transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_fc"]
HIB = {"pdp_choice": {"acc": True}, "pdp_rolling": {"word_perplexity": False, "bits_per_byte": False}}


def _run(root, name, method, sparsity, ppl, *, seed=0, lm_eval=None, hib=True):
    """A run directory as `pdp-gpt2 train [--eval_tasks ...]` writes it: summary.json (with
    ``lm_eval`` {task/metric: value} when tasks ran), lm_eval.json beside it, metrics.jsonl."""
    d = root / name
    d.mkdir(parents=True)
    target = 0.0 if method == "dense" else sparsity
    summary = {
        "method": method, "model": "embedded", "dataset": "shakespeare", "eval_split": "test",
        "sparsity_target": target, "sparsity_actual": target, "perplexity": ppl, "perplexity_dense": 90.0,
        "perplexity_soft": None if method == "dense" else ppl, "soft_hard_gap": None if method == "dense" else 0.0,
        "tau": 0.02, "train_steps": 20, "ramp_steps": 10, "train_seconds": 5.0, "target_weights": 2000,
        "layers": {n: {"zeros": int(1000 * target), "numel": 1000, "sparsity": target} for n in LAYERS},
        "config": {"seed": seed, "custom_optimizer": False,
                   "pdp": {"tau": 0.02, "improved_masking": False, "quantize": False, "bits": 8,
                           "pattern": "unstructured", "allocation": "layer"}},
    }
    if lm_eval is not None:
        summary["lm_eval"] = lm_eval
        full = {"results": {}, "tasks": sorted({k.split("/")[0] for k in lm_eval})}
        if hib:
            full["higher_is_better"] = HIB
        (d / "lm_eval.json").write_text(json.dumps(full))
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 4.0 - s / 20}) + "\n"
                                             for s in range(2, 21, 2)))
    return d


def scored(acc, bpb):
    return {"pdp_choice/acc": acc, "pdp_rolling/bits_per_byte": bpb, "pdp_rolling/word_perplexity": 2 ** (3 * bpb)}


def _runs(root, with_scores=True):
    s = scored if with_scores else (lambda *a: None)
    _run(root, "dense", "dense", 0.0, 88.0, lm_eval=s(0.80, 1.50))
    _run(root, "gmp-50", "gmp", 0.5, 92.0, lm_eval=s(0.75, 1.60))
    _run(root, "gmp-90", "gmp", 0.9, 140.0, lm_eval=s(0.50, 2.10))
    for seed, (acc, bpb, ppl) in enumerate([(0.75, 1.70, 100.0), (0.65, 1.74, 104.0)]):
        _run(root, f"pdp-90-seed{seed}", "pdp", 0.9, ppl, seed=seed, lm_eval=s(acc, bpb))
    _run(root, "pdp-50", "pdp", 0.5, 91.0)  # made without --eval_tasks: its point has no scores
    return root


def test_the_table_puts_scores_next_to_the_perplexity_per_variant_and_sparsity(tmp_path):
    runs, _ = collect([_runs(tmp_path / "runs")])
    head, rows = tasks.table(runs)
    assert head == ["variant", "target %", "perplexity", "pdp_choice/acc ↑", "pdp_rolling/bits_per_byte ↓",
                    "pdp_rolling/word_perplexity ↓"]
    assert [r[:3] for r in rows] == [["dense", "0", "88.00"], ["gmp", "50", "92.00"], ["gmp", "90", "140.00"],
                                     ["pdp", "90", "102.00 ± 2.83 (2 seeds)"]]  # pdp at 50%: no scores, no row
    assert rows[2][3:5] == ["0.5000", "2.1000"]
    assert rows[3][3:5] == ["0.7000 ± 0.0707", "1.7200 ± 0.0283"]  # the mean over the two seeds, their sd


def test_report_md_and_html_carry_the_task_table(tmp_path, png_stand_ins):
    out = tmp_path / "rep"
    write_report([_runs(tmp_path / "runs")], out)
    md = (out / "report.md").read_text()
    assert "## lm-eval task scores" in md
    assert "| gmp | 90 | 140.00 | 0.5000 | 2.1000 |" in md
    assert "| pdp | 90 | 102.00 ± 2.83 (2 seeds) | 0.7000 ± 0.0707 | 1.7200 ± 0.0283 |" in md
    html = (out / "report.html").read_text()
    assert "<h2>lm-eval task scores</h2>" in html and "<td>0.7000 ± 0.0707</td>" in html


def test_the_slide_title_states_which_variant_wins_at_the_highest_sparsity(tmp_path):
    runs, _ = collect([_runs(tmp_path / "runs")])
    f = tasks.finding(runs)
    # at 90%: acc pdp 0.70 > gmp 0.50 (higher is better), bits_per_byte pdp 1.72 < gmp 2.10 (lower is better)
    assert f["title"] == "At 90% sparsity pdp is best on 3 of 3 lm-eval metrics"
    assert f["best"]["pdp_choice/acc"] == ("pdp", pytest.approx(0.70))
    figs, skipped = slides.build(runs, "deck")
    try:
        titles = [fig.texts[0].get_text().replace("\n", " ") for fig in figs]
    finally:
        for fig in figs:
            slides.plt.close(fig)
    assert f["title"] in titles and not any("lm-eval" in s for s in skipped)


def test_one_metric_and_the_direction_from_lm_eval_json(tmp_path):
    root = tmp_path / "runs"
    _run(root, "dense", "dense", 0.0, 88.0, lm_eval={"wt/word_perplexity": 30.0})
    _run(root, "gmp", "gmp", 0.9, 140.0, lm_eval={"wt/word_perplexity": 50.0})
    _run(root, "pdp", "pdp", 0.9, 100.0, lm_eval={"wt/word_perplexity": 40.0})
    runs, _ = collect([root])
    assert tasks.finding(runs)["title"] == "At 90% sparsity pdp scores best on wt/word_perplexity: 40.0000 (dense 30.0000)"
    # lm_eval.json has the last word on direction: here it claims higher is better
    (root / "pdp" / "lm_eval.json").write_text(json.dumps({"higher_is_better": {"wt": {"word_perplexity": True}}}))
    runs, _ = collect([root])
    assert tasks.table(runs)[0][-1] == "wt/word_perplexity ↑"
    assert tasks.finding(runs)["title"].startswith("At 90% sparsity gmp scores best")


def test_without_lm_eval_json_the_name_decides_the_direction(tmp_path):
    root = tmp_path / "runs"
    _run(root, "pdp", "pdp", 0.9, 100.0, lm_eval=scored(0.7, 1.7), hib=False)
    runs, _ = collect([root])
    assert tasks.table(runs)[0][3:] == ["pdp_choice/acc ↑", "pdp_rolling/bits_per_byte ↓",
                                        "pdp_rolling/word_perplexity ↓"]


def _frozen(monkeypatch):
    monkeypatch.setattr(R.time, "strftime", lambda fmt, *a: "2026-12-04 12:00")


def test_without_scores_the_report_and_the_deck_are_unchanged(tmp_path, monkeypatch, png_stand_ins):
    """The same runs without lm_eval: the report and deck equal what they are with the lm-eval parts
    removed (the table and the slide never called), no section, no 'slide not made' line."""
    _frozen(monkeypatch)
    root = _runs(tmp_path / "runs", with_scores=False)
    runs, _ = collect([root])
    assert tasks.table(runs) is None and tasks.finding(runs) is None
    write_report([root], tmp_path / "with")
    figs, skipped = slides.build(runs, "deck")
    titles = [fig.texts[0].get_text() for fig in figs]
    for fig in figs:
        slides.plt.close(fig)

    monkeypatch.setattr(R, "task_table", lambda runs: pytest.fail("called"))
    monkeypatch.setattr(slides, "SLIDES", [s for s in slides.SLIDES if s[1] is not slides.tasks_slide])
    with pytest.raises(pytest.fail.Exception):  # the guard works: the real code path calls it
        write_report([root], tmp_path / "probe")
    monkeypatch.setattr(R, "task_table", lambda runs: None)
    write_report([root], tmp_path / "without")
    for name in ("report.md", "report.html"):
        strip = lambda t: re.sub(r'src="data:image/png;base64,[^"]*"', "", t)  # noqa: E731  (PNG bytes)
        assert strip((tmp_path / "with" / name).read_text()) == strip((tmp_path / "without" / name).read_text())
    assert "lm-eval" not in (tmp_path / "with" / "report.md").read_text()
    figs2, skipped2 = slides.build(runs, "deck")
    titles2 = [fig.texts[0].get_text() for fig in figs2]
    for fig in figs2:
        slides.plt.close(fig)
    assert (titles, skipped) == (titles2, skipped2)


def test_malformed_scores_and_lm_eval_json_cost_nothing_but_themselves(tmp_path):
    root = tmp_path / "runs"
    _run(root, "pdp", "pdp", 0.9, 100.0, lm_eval={"pdp_choice/acc": 0.7, "bad": 1.0, "x/nan": float("nan"),
                                                   "x/str": "high", "x/flag": True})
    (root / "pdp" / "lm_eval.json").write_text("{not json")
    runs, _ = collect([root])
    assert tasks.table(runs) == (["variant", "target %", "perplexity", "pdp_choice/acc ↑"],
                                 [["pdp", "90", "100.00", "0.7000"]])
