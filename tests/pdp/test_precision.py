"""Mixed precision as Trainer runs it (float32 master weights, forward under torch.autocast):
the threshold and the soft mask are computed in float32 from the float32 weights; only the
consumer's matmul runs in the autocast dtype.  Tested on CPU (bfloat16, float16) and on CUDA
where one is present."""
import pytest
import torch

import pdp_gpt2
from pdp_gpt2 import PDPConfig
from pdp_gpt2.pdp.kernels import mask as M

from helpers import tiny_gpt2

CASES = [("cpu", torch.bfloat16), ("cpu", torch.float16)]
if torch.cuda.is_available():
    CASES += [("cuda", torch.bfloat16), ("cuda", torch.float16)]


@pytest.mark.parametrize("device,dtype", CASES)
def test_mask_and_threshold_stay_float32_under_autocast(device, dtype):
    model = tiny_gpt2().to(device).train()
    pruner = pdp_gpt2.attach(model, PDPConfig(sparsity=0.7, tau=0.05, tau_schedule="constant"))
    t = pruner.targets[0]
    seen = {}

    def grab(module, args, out):  # the mask module's output: what the consumer receives
        seen["masked"] = out

    handle = pruner.mask_of(t).register_forward_hook(grab)
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.autocast(device, dtype=dtype):
        loss = model(input_ids=ids, labels=ids).loss
    handle.remove()
    loss.backward()
    w = pruner.original(t)
    masked = seen["masked"]
    assert w.dtype == torch.float32 and masked.dtype == torch.float32  # the mask ran in float32
    mask = pruner.mask_of(t)
    assert mask.t.dtype == torch.float32
    assert torch.equal(mask.t, M.threshold(w.detach().abs(), M.num_pruned(w.numel(), 0.7)))
    # the same values as the float32 definition of w * m(w)
    ref = w.detach() * M.soft_mask(w.detach(), 0.7, 0.05, t=mask.t)
    assert torch.allclose(masked.detach(), ref, rtol=1e-6, atol=1e-7)
    assert w.grad is not None and w.grad.dtype == torch.float32
    # and the refresh after the step reads the float32 weights again
    pruner.step()
    assert torch.equal(mask.t, M.threshold(w.detach().abs(), M.num_pruned(w.numel(), 0.7)))
