"""The command line: one module per subcommand that parses, validates flags, calls one
library function and prints. No logic a library function could hold.

Import rule: may import anything in ``pdp_gpt2``; nothing imports the cli (but
``main.py`` and ``__main__``).
"""
from pdp_gpt2.cli.main import main

__all__ = ["main"]
