"""Movement pruning (Sanh et al. 2020): scores learned from -w * dL/dw."""
