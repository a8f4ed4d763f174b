"""``python -m app.cli`` is the ``fintask`` command."""

from app.cli.main import main

main()
