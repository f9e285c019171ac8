"""The unipool command: ``unipool demo`` or ``unipool bench``.

Also ``python -m unipool ...``. Results go to stdout (``--json``: as JSON); progress of
the long commands goes to stderr when it is a terminal.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unipool", description=__doc__)
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
    demo.add_argument("--json", action="store_true", help="print the results as JSON")
    bench = commands.add_parser(
        "bench", help="unipool next to the drivers' own pools and dedicated connections"
    )
    bench.add_argument(
        "--dsn",
        default=os.environ.get("UNIPOOL_DSN"),
        help="server to use (default: $UNIPOOL_DSN, else a throwaway server)",
    )
    bench.add_argument(
        "--quick", action="store_true", help="short cells, 3 rounds, the targets' workloads only"
    )
    bench.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="save the raw results at PATH; without PATH (or with -), print them on stdout "
        "instead of the tables",
    )
    bench.add_argument("--chart", metavar="PNG", help="draw a chart here (needs matplotlib)")
    bench.add_argument(
        "--only", action="append", metavar="TEXT", help="only systems whose name contains TEXT"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from ._demo import NoServer

    try:
        if args.command == "bench":
            from ._bench import bench as run_bench

            return run_bench(args.dsn, args.quick, args.json, args.only, chart_path=args.chart)
        from ._demo import demo as run_demo

        return run_demo(args.dsn, args.seconds, args.workers, as_json=args.json)
    except NoServer as exc:
        print(f"unipool {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
