"""`python -m gpt ...`: the same command as the `tinygpt` console script (gpt/cli/)."""
import sys

from gpt.cli import main

sys.exit(main())
