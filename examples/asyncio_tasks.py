"""asyncio: many tasks, one pool.

python examples/asyncio_tasks.py [DSN]      (or set UNIPOOL_DSN)
"""

from __future__ import annotations

import asyncio
import os
import sys

import unipool


async def main(
    dsn: str | None, *, backend: str = "asyncpg", table: str = "example_asyncio"
) -> None:
    # `async with pool:` opens the pool on this event loop; it stays bound to it.
    async with unipool.connect(dsn, backend=backend, max_size=4) as pool:
        await pool.aexecute(f"create table {table} (id int primary key, square int)")

        async def work(i: int) -> None:
            # transaction() borrows a connection and opens a transaction in one step.
            async with pool.transaction() as conn:
                await conn.execute(f"insert into {table} values ($1, $2)", i, i * i)

        # Twenty tasks, four connections: the rest queue, and cancelling a
        # waiting task (a timeout, a client gone) takes nothing from the pool.
        await asyncio.gather(*(work(i) for i in range(20)))

        async with pool.acquire() as conn:
            rows = await conn.fetch(f"select id, square from {table} where id < $1 order by id", 4)
        print("rows:", [dict(r) for r in rows])  # Record: r[0], r["id"], dict(r)
        print("sum of squares:", await pool.afetchval(f"select sum(square) from {table}"))
        print(f"connections: {pool.stats().size}, at most {pool.get_max_size()}")
        await pool.aexecute(f"drop table {table}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("UNIPOOL_DSN")))
