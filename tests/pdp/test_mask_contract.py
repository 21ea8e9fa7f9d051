"""One mask contract (pdp/core/mask.py) and capabilities read from where they are declared: a mask's
``recomputable``, a method's ``uses_tau`` and ``patterns`` in its MethodSpec; the step has one owner."""
import pytest
import torch

import pdp_gpt2
from pdp_gpt2 import PDPConfig, UsageError
from pdp_gpt2.pdp.core import registry
from pdp_gpt2.pdp.core.hard import HardMask
from pdp_gpt2.pdp.core.mask import Mask
from pdp_gpt2.pdp.core.schedule import PruningSchedule
from pdp_gpt2.pdp.methods.gmp.driver import GMP
from pdp_gpt2.pdp.methods.movement.driver import MovementMask
from pdp_gpt2.pdp.kernels.fused import KernelOptions
from pdp_gpt2.pdp.methods.pdp.driver import Pruner
from pdp_gpt2.pdp.methods.pdp.mask import PDPMask

from helpers import tiny_gpt2


def test_every_mask_is_a_mask_and_declares_soft_and_recomputable():
    for cls, soft in ((PDPMask, True), (HardMask, False), (MovementMask, False)):
        assert issubclass(cls, Mask) and cls.soft is soft and cls.recomputable, cls


def test_a_mask_missing_part_of_the_contract_cannot_be_made():
    class NoFinal(Mask):
        soft = False

        def forward(self, w):
            return w

        def soft_mask(self, w):
            return torch.ones_like(w)

        def local_soft_mask(self, part):
            return torch.ones_like(part.w)

        def final_keep(self, part):
            return torch.ones_like(part.w, dtype=torch.bool)

    with pytest.raises(TypeError, match="final_local"):  # and to_identity: finalize needs both
        NoFinal()


class _NotRecomputable(HardMask):
    recomputable = False  # keeps HardMask's recipe, but says it is not to be used


class _Plain(GMP):
    def make_mask(self, t):
        return _NotRecomputable(t.module.weight.shape, t.out_dim)


@pytest.fixture
def plain():
    registry.register(registry.MethodSpec("plain", _Plain, gradual=True))
    yield
    registry.unregister("plain")


def test_recompute_hooks_follow_the_declared_capability(plain):
    every = KernelOptions(recompute_min_bytes=0)  # tiny models: recompute all the same
    hooked = pdp_gpt2.attach(tiny_gpt2(), "gmp", PDPConfig(sparsity=0.5), kernels=every)
    assert len(hooked._recompute) == len(hooked.targets) > 0
    assert pdp_gpt2.attach(tiny_gpt2(), "plain", PDPConfig(sparsity=0.5), kernels=every)._recompute == []


class _PDPWithoutTau(Pruner):
    """PDP's driver (it has set_tau) registered as a method that declares no temperature."""


@pytest.fixture
def no_tau():
    registry.register(registry.MethodSpec("notau", _PDPWithoutTau, soft=True, gradual=True))
    yield
    registry.unregister("notau")


def test_the_schedule_drives_tau_when_the_spec_says_so(no_tau):
    cfg = PDPConfig(sparsity=0.5, tau=0.1, tau_schedule="exp", tau_final=0.001)
    sched = PruningSchedule(pdp_gpt2.attach(tiny_gpt2(), "notau", cfg), 10, ramp_steps=2)
    sched.apply(10)
    assert sched.tau is None and "tau" not in sched.metrics()
    assert {m.tau for m in map(sched.pruner.mask_of, sched.pruner.targets)} == {0.1}  # never annealed
    pdp = PruningSchedule(pdp_gpt2.attach(tiny_gpt2(), "pdp", cfg), 10, ramp_steps=2)
    pdp.apply(10)
    assert pdp.tau == pytest.approx(0.001) and pdp.pruner.mask_of(pdp.pruner.targets[0]).tau == pytest.approx(0.001)


@pytest.fixture
def unstructured_only():
    registry.register(registry.MethodSpec("gmp1", "pdp_gpt2.pdp.methods.gmp.driver:GMP", gradual=True,
                                          patterns=("unstructured",)))
    yield
    registry.unregister("gmp1")


def test_attach_refuses_a_pattern_the_spec_does_not_list(unstructured_only):
    with pytest.raises(UsageError, match="method gmp1 prunes only unstructured patterns, not '2:4'"):
        pdp_gpt2.attach(tiny_gpt2(), "gmp1", PDPConfig(sparsity=0.5, pattern="2:4"))
    with pytest.raises(UsageError, match="method sparsegpt prunes only unstructured, N:M patterns, not 'row'"):
        pdp_gpt2.attach(tiny_gpt2(), "sparsegpt", PDPConfig(sparsity=0.5, pattern="row"))
    assert pdp_gpt2.attach(tiny_gpt2(), "gmp1", PDPConfig(sparsity=0.5)) is not None


def test_the_step_has_one_owner():
    pruner = pdp_gpt2.attach(tiny_gpt2(), "gmp", PDPConfig(sparsity=0.5))
    sched = PruningSchedule(pruner, 10, ramp_steps=4)
    sched.step()
    pruner.step()  # a loop that also steps the driver itself: both read the same count
    assert sched.steps == pruner.steps == 2
    sched.step()
    assert sched.steps == pruner.steps == 3 and pruner.sparsity == pytest.approx(sched.sparsity_at(3))
    assert sched.state_dict()["steps"] == pruner.state_dict()["steps"] == 3
