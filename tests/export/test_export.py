"""Export: hand-computed codecs, exact round trips on tiny GPT-2 (Conv1D) and Llama (Linear),
sizes from the real files, corruption detection, CLI bad inputs."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import pdp_gpt2
from pdp_gpt2 import PDPConfig, UsageError
from pdp_gpt2.export import bits as B
from pdp_gpt2.export import compressed as C
from pdp_gpt2.export import nm24
from pdp_gpt2.cli import main
from pdp_gpt2.export.writer import export, pick_bits, quant_bits_hint
from pdp_gpt2.data.models import dtype_kwarg

from helpers import CORPUS_LINES, ROOT, tiny_gpt2, tiny_llama, tiny_tokenizer

MAKERS = {"gpt2": tiny_gpt2, "llama": tiny_llama}


def _ids(seed=1):
    return torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(seed))


def _finalized(tmp_path, kind="gpt2", name="src", bf16=False, **cfg):
    """(directory, dense reloaded model) of a tiny model pruned and finalized with the core API."""
    model = MAKERS[kind]().to(torch.bfloat16 if bf16 else torch.float32)
    pdp_gpt2.attach(model, PDPConfig(**(cfg or {"sparsity": 0.9}))).finalize()
    path = tmp_path / name
    model.save_pretrained(path)
    return path, AutoModelForCausalLM.from_pretrained(path, **dtype_kwarg("auto")).eval()


def _with_tokenizer(path):
    """The CLI refuses a model without a tokenizer (eval and generate would refuse the export)."""
    tiny_tokenizer(CORPUS_LINES).save_pretrained(path)
    return path


def _same_logits(a, b):
    ids = _ids()
    with torch.no_grad():
        x, y = a(ids).logits, b(ids).logits
    return torch.equal(x.view(torch.int32), y.view(torch.int32))  # bit patterns, not just ==


# ---- tier 1: hand-computed bytes ----------------------------------------------------------


def test_pack_bits_is_little_endian_lsb_first():
    # 1 -> bits (1,0), 2 -> (0,1), 3 -> (1,1): stream 100111 -> byte 0b00111001 = 57
    assert B.pack_bits(np.array([1, 2, 3]), 2).tolist() == [57]
    assert B.unpack_bits(np.array([57], dtype=np.uint8), 3, 2).tolist() == [1, 2, 3]
    assert B.pack_bits(np.array([200, 7]), 8).tolist() == [200, 7]
    v = np.random.default_rng(0).integers(0, 32, 101)
    assert B.unpack_bits(B.pack_bits(v, 5), 101, 5).tolist() == v.tolist()
    assert len(B.pack_bits(v, 5)) == B.packed_len(101, 5) == 64


def test_bitmask_bytes_and_values():
    w = torch.tensor([[0.0, 1.5], [0.0, 0.0], [2.0, 0.0], [0.0, -3.0]])
    parts = C.encode_bitmask(w, torch.float32)
    assert parts["mask"].tolist() == [0b10010010]  # flat bits 0,1,0,0,1,0,0,1
    assert parts["values"].tolist() == [1.5, 2.0, -3.0]
    assert torch.equal(C.decode_bitmask(parts["mask"], parts["values"], [4, 2], torch.float32), w)


def test_grid_detection_and_code_bytes():
    w = torch.tensor([[0.0, 0.25, -0.75], [0.5, 0.0, 0.0]])  # row 0: 3-bit grid of step 0.25
    assert C.grid_scales(w, 2, 0) is None  # 0.25 is not on {0, +-0.75}
    bits, scales = pick_bits(w, 0, None)
    assert bits == 3 and torch.equal(scales, torch.tensor([0.25, 0.5 / 3]))
    parts = C.encode_qcodes(w, 3, 0, scales)
    # codes 1, -3, 3 stored as code + 4 = 5, 1, 7: bits 101 100 111 -> 0b11_001_101, 0b1
    assert parts["codes"].tolist() == [0b11001101, 0b1]
    back = C.decode_qcodes(parts["mask"], parts["codes"], parts["scales"], [2, 3], torch.float32, 3, 0)
    assert torch.equal(back, w)


def test_nm_layout_by_hand():
    w = torch.tensor([[0.0, 3.0, 0.0, -1.0, 5.0, 0.0, 0.0, 0.0]])
    parts = nm24.encode_nm(w, group_dim=1)
    assert parts["values"].tolist() == [[3.0, -1.0, 5.0, 0.0]]
    assert parts["indices"].tolist() == [0b01001101]  # positions 1,3 | 0,1 as 2-bit fields
    assert torch.equal(nm24.decode_nm(parts["values"], parts["indices"], [1, 8], torch.float32, 1), w)
    # Conv1D layout (in, out): groups run down dim 0
    assert torch.equal(nm24.decode_nm(**{"values": parts["values"], "indices": parts["indices"]},
                                      shape=[8, 1], dtype=torch.float32, group_dim=0), w.t())
    assert nm24.nm_violation(w, 1) is None
    assert "more than 2 nonzeros" in nm24.nm_violation(torch.tensor([[1.0, 1.0, 1.0, 0.0]]), 1)


def test_quant_bits_hint_reads_nested_summary():
    assert quant_bits_hint({"config": {"pdp": {"quantize": True, "bits": 4}}}) == 4
    assert quant_bits_hint({"config": {"pdp": {"quantize": False, "bits": 8}}}) is None
    assert quant_bits_hint({"quantize/bits": 6}) == 6


# ---- tier 2: round trips on tiny models ------------------------------------------------------


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("fmt", ["dense", "compressed"])
def test_round_trip_exact(tmp_path, kind, fmt):
    src, dense = _finalized(tmp_path, kind)
    rep = export(src, tmp_path / "out", fmt)
    loaded = (AutoModelForCausalLM.from_pretrained(tmp_path / "out") if fmt == "dense"
              else pdp_gpt2.load_compressed(tmp_path / "out"))
    assert _same_logits(dense, loaded)
    for k, v in dense.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert (tmp_path / "out" / "config.json").is_file()
    assert json.loads((tmp_path / "out" / "size_report.json").read_text()) == rep


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_two_four_round_trip_exact(tmp_path, kind):
    src, dense = _finalized(tmp_path, kind, sparsity=0.5, pattern="2:4")
    rep = export(src, tmp_path / "out", "2:4")
    assert rep["encodings"] == {"nm": 8 if kind == "gpt2" else 14}
    assert _same_logits(dense, pdp_gpt2.load_compressed(tmp_path / "out"))
    # 2 of 4 values kept (fp32) + one 2-bit index each: 1/2 + 1/32 of the dense bytes
    assert rep["target_weights"]["ratio"] == pytest.approx(0.5 + 1 / 32)


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_codes_round_trip_exact(tmp_path, bits):
    src, dense = _finalized(tmp_path, "gpt2", sparsity=0.9, quantize=True, bits=bits)
    rep = export(src, tmp_path / "out", "compressed")
    assert rep["encodings"] == {f"bitmask-qcodes/{bits}-bit": 8}
    assert _same_logits(dense, pdp_gpt2.load_compressed(tmp_path / "out"))
    raw = export(src, tmp_path / "raw", "compressed", codes=False)
    assert raw["encodings"] == {"bitmask": 8}
    assert rep["target_weights"]["exported_bytes"] < raw["target_weights"]["exported_bytes"]


def test_bf16_quantized_codes_round_trip_exact(tmp_path):
    # bf16 rounds w/s = 127.5 up to 128: codes must be clamped to the grid like training clamps them
    src, dense = _finalized(tmp_path, "llama", bf16=True, sparsity=0.9, quantize=True, bits=8)
    assert dense.dtype == torch.bfloat16
    rep = export(src, tmp_path / "out")
    assert rep["encodings"] == {"bitmask-qcodes/8-bit": 14}
    loaded = pdp_gpt2.load_compressed(tmp_path / "out")
    assert loaded.dtype == torch.bfloat16
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(dense(ids).logits, loaded(ids).logits)


def test_summary_bits_are_used_from_a_run_dir(tmp_path):
    src, dense = _finalized(tmp_path, "llama", name="run/final", sparsity=0.9, quantize=True, bits=4)
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"config": {"pdp": {"quantize": True, "bits": 4}}}))
    rep = export(tmp_path / "run", tmp_path / "out")
    assert rep["encodings"] == {"bitmask-qcodes/4-bit": 14}
    assert rep["source"] == str(src)
    assert _same_logits(dense, pdp_gpt2.load_compressed(tmp_path / "out"))


def test_fp16_values_are_smaller_and_rounded(tmp_path):
    src, dense = _finalized(tmp_path, "gpt2")
    rep32, rep16 = export(src, tmp_path / "a"), export(src, tmp_path / "b", values="fp16")
    assert rep16["target_weights"]["exported_bytes"] < 0.65 * rep32["target_weights"]["exported_bytes"]
    w = dense.transformer.h[0].mlp.c_fc.weight
    got = pdp_gpt2.load_compressed(tmp_path / "b").transformer.h[0].mlp.c_fc.weight
    assert torch.equal(got, w.half().float()) and not torch.equal(got, w)


def test_tied_embedding_stored_once(tmp_path):
    src, _ = _finalized(tmp_path, "gpt2")
    export(src, tmp_path / "out")
    meta = json.loads(load_file_meta(tmp_path / "out" / C.WEIGHTS_FILE))
    assert meta["tied"] == {"lm_head.weight": "transformer.wte.weight"}
    assert "lm_head.weight" not in meta["tensors"]
    m = pdp_gpt2.load_compressed(tmp_path / "out")
    assert m.lm_head.weight.data_ptr() == m.transformer.wte.weight.data_ptr()


def load_file_meta(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()[C.META_KEY]


def test_size_ratio_comes_from_the_files(tmp_path):
    src, dense = _finalized(tmp_path, "llama")
    rep = export(src, tmp_path / "out")
    f = tmp_path / "out" / C.WEIGHTS_FILE
    assert rep["whole_model"]["exported_bytes"] == f.stat().st_size
    assert rep["whole_model"]["dense_bytes"] == (src / "model.safetensors").stat().st_size
    # independent count: per pruned tensor ceil(n / 8) mask bytes + 4 bytes per nonzero
    stored, want, dense_bytes = load_file(str(f)), 0, 0
    for name, w in dense.state_dict().items():
        if f"{name}/mask" in stored:
            want += (w.numel() + 7) // 8 + 4 * int((w != 0).sum())
            dense_bytes += 4 * w.numel()
    assert rep["target_weights"]["exported_bytes"] == want
    assert rep["target_weights"]["dense_bytes"] == dense_bytes
    assert rep["target_weights"]["ratio"] == pytest.approx(1 / 32 + 0.1, abs=0.002)


def test_reader_in_format_md_decodes_the_same_tensors(tmp_path):
    """docs/format.md's numpy-only reader is the spec: it must agree with the writer."""
    import re

    doc = (ROOT / "docs" / "format.md").read_text()
    ns = {}
    exec(re.findall(r"```python\n(.*?)```", doc, re.S)[-1], ns)
    cases = [("compressed", {"sparsity": 0.9}), ("compressed", {"sparsity": 0.9, "quantize": True, "bits": 3}),
             ("2:4", {"sparsity": 0.5, "pattern": "2:4"})]
    for i, (fmt, cfg) in enumerate(cases):
        src, dense = _finalized(tmp_path, "gpt2", name=f"src{i}", **cfg)
        out = tmp_path / f"out{i}"
        export(src, out, fmt)
        got = ns["read_pdp"](out / C.WEIGHTS_FILE)
        want = dense.state_dict()
        assert set(got) == set(want)
        for k, v in want.items():
            assert np.array_equal(got[k], v.numpy()), (fmt, k)


# ---- corruption -------------------------------------------------------------------------------


@pytest.fixture
def exported(tmp_path):
    src, _ = _finalized(tmp_path, "gpt2")
    export(src, tmp_path / "out")
    return tmp_path / "out" / C.WEIGHTS_FILE


@pytest.mark.parametrize("keep", [4, 100, -1, -1000])
def test_truncated_file_is_refused(exported, keep):
    data = exported.read_bytes()
    exported.write_bytes(data[:keep])
    with pytest.raises(UsageError, match="corrupt"):
        pdp_gpt2.load_compressed(exported.parent)


@pytest.mark.parametrize("where", [0.02, 0.5, 0.9, -1])
def test_flipped_byte_is_refused(exported, where):
    data = bytearray(exported.read_bytes())
    i = int(where * len(data)) if where >= 0 else len(data) - 1
    data[i] ^= 0x5A
    exported.write_bytes(bytes(data))
    with pytest.raises(UsageError):
        pdp_gpt2.load_compressed(exported.parent)


def test_not_an_export_is_refused(tmp_path):
    src, _ = _finalized(tmp_path, "gpt2")
    with pytest.raises(UsageError, match="not a pdp-gpt2"):
        pdp_gpt2.load_compressed(src)


# ---- CLI --------------------------------------------------------------------------------------


def _cli_fails(capsys, argv, match, out):
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err
    assert not out.exists() or out.is_file() or not any(out.iterdir()) or (out / "keep.txt").exists()
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]


def test_cli_writes_table_and_files(tmp_path, capsys):
    src = _with_tokenizer(_finalized(tmp_path, "gpt2")[0])
    assert main(["export", str(src), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| target weights (8 tensors) |" in out and "| whole model (weight files) |" in out
    # the tokenizer's own files: tokenizer.json, tokenizer_config.json (+ special_tokens_map.json before transformers 5)
    tiny_tokenizer(CORPUS_LINES).save_pretrained(tmp_path / "tok")
    tokenizer_files = [p.name for p in (tmp_path / "tok").iterdir()]
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(tokenizer_files)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([
        "README.md", "config.json", "generation_config.json", C.WEIGHTS_FILE, "size_report.json", *tokenizer_files])


def test_cli_bad_inputs_exit_2_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    _cli_fails(capsys, [str(tmp_path / "nope"), "--out", str(out)], "no such directory", out)
    src = _with_tokenizer(_finalized(tmp_path, "gpt2")[0])
    _cli_fails(capsys, [str(src), "--out", str(out), "--format", "2:4"], "not 2:4 sparse", out)
    dense = tmp_path / "dense"
    tiny_gpt2().save_pretrained(dense)
    _with_tokenizer(dense)
    _cli_fails(capsys, [str(dense), "--out", str(out)], "not a pruned model", out)
    # still parametrized: a state_dict saved mid-training
    masked = tmp_path / "masked"
    masked.mkdir()
    (masked / "config.json").write_text((src / "config.json").read_text())
    sd = load_file(str(src / "model.safetensors"))
    sd["transformer.h.0.mlp.c_fc.parametrizations.weight.original"] = sd.pop("transformer.h.0.mlp.c_fc.weight")
    save_file(sd, str(masked / "model.safetensors"))
    _cli_fails(capsys, [str(masked), "--out", str(out)], "not finalized", out)
    del sd["transformer.h.0.mlp.c_fc.parametrizations.weight.original"]  # a weight missing altogether
    save_file(sd, str(masked / "model.safetensors"))
    _cli_fails(capsys, [str(masked), "--out", str(out)], "incomplete", out)
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _cli_fails(capsys, [str(src), "--out", str(out)], "not empty", out)
    _cli_fails(capsys, [str(src), "--out", str(out), "--overwrite"], "not a pdp-gpt2 export", out)  # not ours
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    assert main(["export", str(src), "--out", str(out)]) == 0  # an empty directory is fine
    assert main(["export", str(src), "--out", str(out), "--overwrite"]) == 0  # an earlier export is replaced
    assert (out / C.WEIGHTS_FILE).is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="semi-structured 2:4 kernels need CUDA")
def test_two_four_semi_structured_on_cuda(tmp_path):
    model = tiny_gpt2(n_embd=128).half()
    pdp_gpt2.attach(model, PDPConfig(sparsity=0.5, pattern="2:4")).finalize()
    model.save_pretrained(tmp_path / "src")
    export(tmp_path / "src", tmp_path / "out", "2:4")
    sparse = pdp_gpt2.load_compressed(tmp_path / "out", semi_structured=True)
    ids = _ids().cuda()
    with torch.no_grad():
        want = model.cuda()(ids).logits.float()
        got = sparse(ids).logits.float()
    assert torch.allclose(got, want, atol=2e-2, rtol=2e-2)
