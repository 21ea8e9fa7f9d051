""":func:`load_compressed`: a plain HF model from a ``compressed`` or ``2:4`` export directory
(the format and its reader are compressed.py; docs/format.md specifies the bytes)."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from pdp_gpt2.data.models import dtype_kwarg
from pdp_gpt2.errors import UsageError
from pdp_gpt2.export.compressed import WEIGHTS_FILE, check_files, dtype_of, read_compressed
from pdp_gpt2.export.nm24 import to_semi_structured

RUNTIMES = ("dense", "sparse")


def load_compressed(path: str | Path, *, runtime: str = "dense", semi_structured: bool = False,
                    device: str | None = None) -> nn.Module:
    """A HF causal LM from a ``compressed`` or ``2:4`` export, equal to the dense finalized one.

    ``runtime="dense"`` gives a plain model (quantized codes dequantized); ``"sparse"``
    swaps the pruned layers for CSR ones (:func:`pdp_gpt2.export.sparse.sparsify`),
    same logits within fp32 rounding, faster on CPU at high sparsity.
    Every length and checksum is verified before anything is decoded.  With
    ``semi_structured=True`` on a CUDA machine the 2:4 layers get
    ``torch.sparse.to_sparse_semi_structured`` weights (model moved to ``device``
    or cuda); without CUDA the model simply stays dense.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    if runtime == "sparse" and (semi_structured or (device is not None and torch.device(device).type != "cpu")):
        raise UsageError("runtime='sparse' is the CPU runtime; for 2:4 on CUDA use semi_structured=True alone")
    path = Path(path).expanduser()
    f = path / WEIGHTS_FILE
    if not f.is_file():
        raise UsageError(f"{path}: no {WEIGHTS_FILE} (not a pdp-gpt2 compressed or 2:4 export)")
    state, header = read_compressed(f)
    check_files(path, header)  # config.json and the tokenizer are checked like the weights
    for alias, first in header["tied"].items():
        state[alias] = state[first]
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        model = AutoModelForCausalLM.from_config(config, **dtype_kwarg(dtype_of(header["torch_dtype"])))
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot build the model from {path / 'config.json'}: {str(e).splitlines()[0]}") from None
    want = set(model.state_dict())
    if want != set(state):
        raise UsageError(f"{f} does not match {path / 'config.json'}: "
                         f"{len(want - set(state))} tensors missing, {len(set(state) - want)} unexpected")
    model.load_state_dict(state, strict=True)
    model.eval()
    if semi_structured:
        if not torch.cuda.is_available():
            warnings.warn("no CUDA device: 2:4 layers stay dense", stacklevel=2)
        else:
            model.to(device or "cuda")
            names = [n.removesuffix(".weight") for n, s in header["tensors"].items() if s["encoding"] == "nm"]
            to_semi_structured(model, names)
    elif device is not None:
        model.to(device)
    if runtime == "sparse":
        from pdp_gpt2.export.sparse import sparsify

        sparsify(model, [n.removesuffix(".weight") for n, s in header["tensors"].items() if s["encoding"] != "raw"])
    return model
