"""Blocking code with threads: one pool shared by a pool of worker threads.

python examples/blocking_threads.py [DSN]      (or set UNIPOOL_DSN)
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import unipool


def main(dsn: str | None, *, table: str = "example_threads", workers: int = 8) -> None:
    # connect() does no I/O: it checks the options and returns the pool.
    pool = unipool.connect(dsn, backend="psycopg", min_size=2, max_size=4)

    # `with pool:` opens min_size connections now and closes every one at the end.
    with pool:
        # `table` is our own identifier, never user input; values always go as $n.
        pool.execute(f"create table {table} (worker int, n int)")

        def work(worker: int) -> int:
            # A borrow lasts as long as the block. Eight threads share four
            # connections: the others wait in the pool's queue, first come first served.
            with pool.acquire() as conn:
                with conn.transaction():  # commits at the end, rolls back on an exception
                    conn.executemany(
                        f"insert into {table} values ($1, $2)", [(worker, n) for n in range(5)]
                    )
                return int(conn.fetchval(f"select count(*) from {table} where worker = $1", worker))

        with ThreadPoolExecutor(workers) as executor:
            counts = list(executor.map(work, range(workers)))

        # The pool's own shortcuts borrow a connection for one statement.
        total = pool.fetchval(f"select count(*) from {table}")
        stats = pool.stats()
        print(f"{workers} threads inserted {total} rows ({counts[0]} each)")
        print(f"connections: {stats.size}, at most {stats.max_size}; borrows: {stats.acquires}")
        pool.execute(f"drop table {table}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("UNIPOOL_DSN"))
