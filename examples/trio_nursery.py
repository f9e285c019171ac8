"""trio: the same pool API, with a nursery; every backend works under trio.

python examples/trio_nursery.py [DSN]      (or set UNIPOOL_DSN)
"""

from __future__ import annotations

import os
import sys

import trio

import unipool


async def main(dsn: str | None, *, backend: str = "psycopg", table: str = "example_trio") -> None:
    # Under trio the pool starts no free-floating task: its background work
    # (opening and checking connections) lives in the task group of `async with pool:`.
    async with unipool.connect(dsn, backend=backend, max_size=3) as pool:
        await pool.aexecute(f"create table {table} (id int, at timestamptz default now())")

        async def work(i: int) -> None:
            async with pool.acquire() as conn:
                await conn.execute(f"insert into {table} (id) values ($1)", i)

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(work, i)

        # A deadline is trio's cancel scope: here the wait for a connection and the
        # query are both bounded by it.
        with trio.fail_after(10):
            count = await pool.afetchval(f"select count(*) from {table}")
        print(f"{count} rows from 10 tasks over at most {pool.get_max_size()} connections")
        await pool.aexecute(f"drop table {table}")


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else os.environ.get("UNIPOOL_DSN"))
