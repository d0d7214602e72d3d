"""``python -m recipe_search`` = the ``recipe-search`` command."""

from .cli import main

main()
