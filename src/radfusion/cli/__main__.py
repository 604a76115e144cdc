"""``python -m radfusion.cli``: the same as the ``radfusion`` command."""

from radfusion.cli import main

main()
