"""The driver lifecycle and what every method shares: ``attach`` (attach.py), the ``MaskDriver``
contract (driver.py), hard 0/1 masks (hard.py), the method registry (registry.py, torch-free),
schedules, targets, the mask-aware optimizer, calibration block by block (sequential.py) and the
config schema (config.py, torch-free). Imports kernels and patterns, never a method: a method's
driver is named in the registry as a "module:attr" string and loaded on first use.
"""
