"""PDP core: pure mask math (mask.py), the parametrization (param.py), the lifecycle (attach.py)."""
