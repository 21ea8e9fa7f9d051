import sys

from pdp_gpt2.cli import main

sys.exit(main())
