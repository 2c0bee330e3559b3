"""``python -m sale.scripts.cli``: the `sale` command line."""

from sale.scripts.cli import main

main()
