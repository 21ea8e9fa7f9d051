"""The PDP core: pure mask math (mask.py, fused.py), the parametrization (param.py), the
driver lifecycle (attach.py, baselines.py), schedules (schedule.py) and PDPConfig (config.py).

Import rule: imports torch and, of this package, only ``pdp_gpt2.pdp.*`` and
``pdp_gpt2.errors``. Never data, train, export, report or cli: the core must be usable
(and testable) on a bare ``nn.Module`` with no run around it.
"""
