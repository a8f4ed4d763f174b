"""``python -m app`` is the ``fintask`` command."""

from app.cli import main

main()
