"""Gradual magnitude pruning (Zhu & Gupta 2017) on the sparsity schedule."""
