"""`python -m gpt ...`: the same command as the `tinygpt` console script (gpt/cli.py)."""
import sys

from gpt.cli import main

sys.exit(main())
