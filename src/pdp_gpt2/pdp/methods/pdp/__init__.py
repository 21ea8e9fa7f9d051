"""PDP, the method this package ships: soft masks from each weight magnitude (driver.py, mask.py,
and its own settings, config.py)."""
