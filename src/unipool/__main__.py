"""The unipool command: ``python -m unipool demo``."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m unipool", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="a short concurrent workload in every mode, with a table of results"
    )
    demo.add_argument(
        "--dsn",
        default=os.environ.get("UNIPOOL_DSN"),
        help="server to use (default: $UNIPOOL_DSN, else a throwaway server started for the demo)",
    )
    demo.add_argument("--seconds", type=float, default=1.0, help="run time of each case")
    demo.add_argument("--workers", type=int, default=20, help="concurrent threads or tasks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from ._demo import demo as run_demo

    return run_demo(args.dsn, args.seconds, args.workers)


if __name__ == "__main__":
    sys.exit(main())
