"""The unipool command: ``unipool demo``, ``unipool bench`` or ``unipool check DSN``.

Also ``python -m unipool ...``. Results go to stdout (``--json``: as JSON); progress of
the long commands goes to stderr when it is a terminal.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

_CHECK_EPILOG = """\
exit status: 0 no problem; 1 a host answers but something needs attention (capacity,
replication lag); 2 invalid command line or DSN; 3 a host refuses the login (password,
role, database, TLS, server full); 4 a host cannot be reached. With several hosts, the
most serious wins.
"""


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
    bench.add_argument(
        "--opcodes",
        action="store_true",
        help="also count each unipool system's Python opcodes per operation (held, borrowed)",
    )
    check = commands.add_parser(
        "check",
        help="diagnose a DSN: reachability, TLS, login, role, lag, capacity, round trip",
        epilog=_CHECK_EPILOG,
    )
    check.add_argument(
        "dsn",
        metavar="DSN",
        nargs="?",
        help="a postgresql:// URI or key=value DSN (default: the libpq environment variables, "
        "PGHOST, PGPORT, PGUSER, ...)",
    )
    check.add_argument("--backend", default="psycopg", help="backend to log in with")
    check.add_argument(
        "--max-size",
        type=int,
        default=10,
        metavar="N",
        help="the pool's max_size, to compare with the free connections (default 10)",
    )
    check.add_argument("--json", action="store_true", help="print the findings as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "check":
        from ._check import check as run_check

        return run_check(args.dsn, args.backend, args.max_size, args.json)
    from ._demo import NoServer

    try:
        if args.command == "bench":
            from ._bench import bench as run_bench

            return run_bench(
                args.dsn, args.quick, args.json, args.only, chart_path=args.chart,
                opcodes=args.opcodes,
            )  # fmt: skip
        from ._demo import demo as run_demo

        return run_demo(args.dsn, args.seconds, args.workers, as_json=args.json)
    except NoServer as exc:
        print(f"unipool {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
