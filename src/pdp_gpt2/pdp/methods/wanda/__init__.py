"""Wanda (Sun et al. 2023): one-shot |w| * ||x|| on calibration data."""
