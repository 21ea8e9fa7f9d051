"""One package per pruning method, each with its driver (and mask, where it has its own).

A method imports the core, the patterns and the kernels, never another method; it is registered
by name in pdp/core/registry.py.
"""
