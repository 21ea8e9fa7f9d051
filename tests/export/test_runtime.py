"""The sparse CPU runtime: the rule, SparseLinear against F.linear by hand, logits and greedy
generation equal to the dense runtime on tiny GPT-2 (Conv1D) and Llama (Linear), plain finalized
directories, memory-traffic accounting, and `pdp-gpt2 generate`."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

import pdp_gpt2
from pdp_gpt2.cli import main
from pdp_gpt2.export.loader import load_for_inference, model_kind
from pdp_gpt2.export.sparse import SparseLinear, decode_weight_bytes, max_sparse_rows, sparsify
from pdp_gpt2.export.writer import export
from pdp_gpt2.pdp.core.targets import find_targets

from helpers import ROOT, tiny_gpt2, tiny_llama

MAKERS = {"gpt2": tiny_gpt2, "llama": tiny_llama}
# One density per rule row, cycled over the layers: sparse at every row count, <=64, <=16, decode only, dense.
SPARSITIES = (0.95, 0.8, 0.7, 0.5, 0.2)


def _prune(model, sparsities=SPARSITIES):
    """Magnitude-prune each target to the next sparsity in the cycle (exact zeros, like finalize)."""
    for i, t in enumerate(find_targets(model)):
        w = t.module.weight.data
        k = int(round(w.numel() * sparsities[i % len(sparsities)]))
        w.view(-1)[w.abs().view(-1).argsort()[:k]] = 0
    return model


def test_rule_by_density():
    assert [max_sparse_rows(d) for d in (0.05, 0.12, 0.2, 0.3, 0.5, 0.55, 0.6, 1.0)] == \
        [math.inf, math.inf, 64, 16, 1, 1, 0, 0]


@pytest.mark.parametrize("rows", [1, 3, 64, 65])
def test_sparse_linear_equals_f_linear(rows):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, generator=g) * (torch.rand(6, 5, generator=g) < 0.3)
    b = torch.randn(6, generator=g)
    lin = SparseLinear(w, b, 64)  # rows 1..64 on CSR (mv, then mm), 65 on the dense copy
    assert lin.dense is not None
    x = torch.randn(rows, 2, 5, generator=g)[:, 0]  # a non-contiguous input
    torch.testing.assert_close(lin(x), F.linear(x, w, b), atol=1e-6, rtol=0)
    x3 = torch.randn(1, rows, 5, generator=g)
    assert lin(x3).shape == (1, rows, 6)
    torch.testing.assert_close(lin(x3), F.linear(x3, w, b), atol=1e-6, rtol=0)


def test_hand_csr_and_bytes():
    w = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, -3.0]])
    lin = SparseLinear(w, None, math.inf)
    assert lin.dense is None  # sparse at every row count: no dense copy kept
    assert lin.csr.crow_indices().tolist() == [0, 1, 1, 3] and lin.csr.col_indices().tolist() == [1, 0, 2]
    assert lin.csr.col_indices().dtype == torch.int32
    assert lin(torch.tensor([[1.0, 10.0, 100.0]])).tolist() == [[20.0, 0.0, -299.0]]
    assert lin.stored_bytes(1) == 3 * 4 + 3 * 4 + 4 * 4  # values, column indices, row pointers


def test_sparsify_converts_conv1d_by_density_and_skips_dense_and_tied_head():
    model = _prune(tiny_gpt2())
    swapped = sparsify(model)
    # 2 layers x 4 Conv1D, densities cycle 0.05, 0.2, 0.3, 0.5, 0.8: the 0.8 ones stay Conv1D
    targets = [n for n, m in model.named_modules() if isinstance(m, (Conv1D, SparseLinear))]
    assert len(targets) == 8 and len(swapped) == 8 - sum(1 for i in range(8) if SPARSITIES[i % 5] < 0.45)
    assert isinstance(model.lm_head, nn.Linear) and model.lm_head.weight is model.transformer.wte.weight
    assert {m.max_rows for m in swapped.values()} == {math.inf, 64, 16, 1}


def test_decode_bytes_count_csr_and_the_tied_head_once():
    model = _prune(tiny_gpt2(), (0.9,))
    dense_bytes = decode_weight_bytes(model)
    blocks = sum(t.module.weight.numel() + t.module.bias.numel() for t in find_targets(model)) * 4
    head = model.lm_head.weight.numel() * 4  # tied to wte: counted once, as the head
    assert dense_bytes == blocks + head
    swapped = sparsify(model)
    nnz = sum(int(m.csr.values().numel()) for m in swapped.values())
    rows = sum(m.out_features + 1 for m in swapped.values())
    bias = sum(m.bias.numel() for m in swapped.values()) * 4
    assert decode_weight_bytes(model) == nnz * 8 + rows * 4 + bias + head


def _export(tmp_path, kind, **kw):
    model = _prune(MAKERS[kind]())
    model.save_pretrained(tmp_path / "src")
    export(tmp_path / "src", tmp_path / "out", **kw)
    return tmp_path / "out"


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_sparse_runtime_logits_and_greedy_generation_equal_dense(tmp_path, kind):
    out = _export(tmp_path, kind)
    dense = pdp_gpt2.load_compressed(out)
    sparse = pdp_gpt2.load_compressed(out, runtime="sparse")
    n = sum(isinstance(m, SparseLinear) for m in sparse.modules())
    assert n >= 6 and not any(isinstance(m, SparseLinear) for m in dense.modules())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for shape in [(1, 1), (1, 9), (2, 40)]:  # decode matvec, short and long prefill (dense fallbacks)
            ids = torch.randint(0, 128, shape, generator=g)
            diff = (dense(ids).logits - sparse(ids).logits).abs().max().item()
            assert diff <= 1e-4, (shape, diff)
        prompt = torch.randint(0, 128, (1, 5), generator=g)
        a = dense.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
        b = sparse.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert a.shape == (1, 17) and torch.equal(a, b)


def test_quantized_export_dequantizes_then_runs_sparse(tmp_path):
    model = _prune(tiny_gpt2(), (0.9,))
    for t in find_targets(model):  # put each weight on a symmetric 8-bit per-output-channel grid
        w = t.module.weight.data
        s = (w.abs().amax(dim=0, keepdim=True) / 127).clamp_min(1e-6)  # an all-zero channel: no NaN
        w.copy_(torch.round(w / s) * s)
    model.save_pretrained(tmp_path / "src")
    report = export(tmp_path / "src", tmp_path / "out")
    assert set(report["encodings"]) == {"bitmask-qcodes/8-bit"}
    ids = torch.randint(0, 128, (1, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(ids).logits
        got = pdp_gpt2.load_compressed(tmp_path / "out", runtime="sparse")(ids).logits
    assert (want - got).abs().max().item() <= 1e-4


def test_plain_finalized_and_run_dirs_load_sparse(tmp_path, tiny_assets):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, _ = tiny_assets
    model = _prune(AutoModelForCausalLM.from_pretrained(src_dir))
    run = tmp_path / "run"
    model.save_pretrained(run / "final")
    AutoTokenizer.from_pretrained(src_dir).save_pretrained(run / "final")
    assert model_kind(str(run)) == ("run", run / "final")
    sparse, tok, kind = load_for_inference(str(run), "sparse")
    assert kind == "run" and sum(isinstance(m, SparseLinear) for m in sparse.modules()) == 7
    ids = tok("the quick brown fox", return_tensors="pt").input_ids
    with torch.no_grad():
        assert (model(ids).logits - sparse(ids).logits).abs().max().item() <= 1e-4
    with pytest.raises(pdp_gpt2.UsageError, match="unknown --runtime"):
        load_for_inference(str(run), "csr")


def test_cli_generate_prints_same_text_for_both_runtimes(tmp_path, tiny_assets, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, _ = tiny_assets
    _prune(AutoModelForCausalLM.from_pretrained(src_dir)).save_pretrained(tmp_path / "src")
    AutoTokenizer.from_pretrained(src_dir).save_pretrained(tmp_path / "src")
    export(tmp_path / "src", tmp_path / "out")
    capsys.readouterr()  # export's own output
    texts = []
    for runtime in ("dense", "sparse"):
        assert main(["generate", str(tmp_path / "out"), "--prompt", "the quick", "--runtime", runtime,
                     "--max_new_tokens", "8", "--num_threads", "1"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert lines[-1].startswith(f"[{runtime} runtime, 1 thread(s)] prefill ") and "tokens/s" in lines[-1]
        assert "decode 8 tokens" in lines[-1]
        texts.append("\n".join(lines[:-1]))
    assert texts[0] == texts[1] and texts[0].startswith("the quick")
    assert main(["generate", str(tmp_path / "out"), "--max_new_tokens", "0"]) == 2


@pytest.mark.slow
def test_inference_benchmark_runs_tiny_and_writes_json(tmp_path, capsys):
    import importlib.util
    import json

    path = ROOT / "benchmarks" / "inference.py"
    spec = importlib.util.spec_from_file_location("inference_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "inference.json"
    bench.main(["--tiny", "--skip-sizes", "--sparsities", "0.9", "--threads", "1", "--reps", "1",
                "--decode_steps", "2", "--json", str(out)])
    r = json.loads(out.read_text())
    assert [row["measure"] for row in r["rows"]] == ["decode", "prefill 8", "prefill 32"]
    assert all(row["ratio"] == pytest.approx(row["sparse_tps"] / row["dense_tps"]) for row in r["rows"])
    (t,) = r["traffic"]
    # tiny GPT-2 at 90%: 8 block weights (+ biases) and the tied 512x64 head, dense vs CSR
    assert t["pruned_tensors"] == 8 and t["limit"] == pytest.approx(t["dense_bytes"] / t["sparse_bytes"]) and t["limit"] > 2
    assert r["max_abs_logit_diff"]["0.9"] <= 1e-4
    printed = capsys.readouterr().out
    assert "| 90% | 1 | decode |" in printed and "Memory-traffic limit" in printed


def test_load_compressed_refuses_unknown_or_gpu_sparse_runtime(tmp_path):
    out = _export(tmp_path, "gpt2")
    with pytest.raises(pdp_gpt2.UsageError, match="unknown runtime 'csr'"):
        pdp_gpt2.load_compressed(out, runtime="csr")
    with pytest.raises(pdp_gpt2.UsageError, match="CPU runtime"):
        pdp_gpt2.load_compressed(out, runtime="sparse", semi_structured=True)
