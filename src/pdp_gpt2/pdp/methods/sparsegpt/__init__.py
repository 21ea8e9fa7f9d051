"""SparseGPT (Frantar & Alistarh 2023): one-shot, weights reconstructed layer by layer."""
