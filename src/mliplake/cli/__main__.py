"""``python -m mliplake.cli``: the command line, as the ``mliplake`` script runs it."""
from mliplake.cli import main

main()
