"""``python -m robust.cli``: the same as the ``robust`` console script."""
from robust.cli import main

main()
