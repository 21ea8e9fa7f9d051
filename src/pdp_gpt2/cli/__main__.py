import sys

from pdp_gpt2.cli.main import main

sys.exit(main())
