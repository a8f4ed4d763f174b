"""``python -m sandbox --host 127.0.0.1 --port 8001``: serve the sandbox provider with uvicorn.

Faults come from the ``SANDBOX_*`` variables (see ``sandbox.config``); fintask finds the sandbox
through ``PROVIDER_URL``, whose default is ``http://127.0.0.1:8001``.
"""

from __future__ import annotations

import argparse

import uvicorn

from sandbox.app import create_app
from sandbox.config import SandboxConfig


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, read the faults from the environment and serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        config = SandboxConfig.from_env()
    except ValueError as error:
        parser.error(str(error))
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
