"""A small ledger behind a DatabaseManager: accounts, and transfers that never overdraw.

    python examples/ledger.py [DSN]      (or set UNIPOOL_DSN)

The application holds one DatabaseManager for its whole life; it owns the pool
and is the only code that writes SQL.
"""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal

import unipool


class InsufficientFunds(Exception):
    """The source account holds less than the amount."""


class UnknownAccount(LookupError):
    """No account has this id."""


class DatabaseManager:
    def __init__(
        self, dsn: str | None, *, backend: str = "asyncpg", prefix: str = "ledger"
    ) -> None:
        self.pool = unipool.connect(dsn, backend=backend, min_size=1, max_size=5)
        self.accounts = f"{prefix}_accounts"
        self.transfers = f"{prefix}_transfers"

    async def connect(self) -> None:
        await self.pool.aopen()

    async def close(self) -> None:
        await self.pool.aclose()

    async def create_schema(self) -> None:
        # The CHECK is the last line of defence: even a buggy transfer cannot
        # leave a negative balance behind.
        async with self.pool.transaction() as conn:
            await conn.execute(
                f"create table if not exists {self.accounts} (id serial primary key,"
                " owner text not null, balance numeric(12, 2) not null check (balance >= 0))"
            )
            await conn.execute(
                f"create table if not exists {self.transfers} (id serial primary key,"
                " source int not null, target int not null, amount numeric(12, 2) not null)"
            )

    async def drop_schema(self) -> None:
        await self.pool.aexecute(f"drop table if exists {self.transfers}, {self.accounts}")

    async def open_account(self, owner: str, balance: Decimal = Decimal(0)) -> int:
        sql = f"insert into {self.accounts} (owner, balance) values ($1, $2) returning id"
        return int(await self.pool.afetchval(sql, owner, balance))

    async def balance(self, account: int) -> Decimal:
        value = await self.pool.afetchval(
            f"select balance from {self.accounts} where id = $1", account
        )
        if value is None:
            raise UnknownAccount(account)
        return Decimal(value)

    async def transfer(self, source: int, target: int, amount: Decimal) -> None:
        """Move ``amount`` in one transaction: all of it happens, or none of it."""
        if amount <= 0 or source == target:
            raise ValueError("a transfer moves a positive amount between two accounts")
        async with self.pool.transaction() as conn:
            # Lock both rows, always in id order: two opposite transfers then wait
            # for each other instead of deadlocking, and no concurrent transfer can
            # spend the same money between our check and our update.
            await conn.fetch(
                f"select id from {self.accounts} where id = any($1::int[]) order by id for update",
                [source, target],
            )
            balance = await conn.fetchval(
                f"select balance from {self.accounts} where id = $1", source
            )
            if balance is None:
                raise UnknownAccount(source)
            if balance < amount:
                raise InsufficientFunds(f"account {source} holds {balance}, not {amount}")
            await conn.execute(
                f"update {self.accounts} set balance = balance - $2 where id = $1", source, amount
            )
            credited = await conn.execute(
                f"update {self.accounts} set balance = balance + $2 where id = $1", target, amount
            )
            if credited == "UPDATE 0":
                # Raising inside the block rolls back the debit above as well.
                raise UnknownAccount(target)
            await conn.execute(
                f"insert into {self.transfers} (source, target, amount) values ($1, $2, $3)",
                source,
                target,
                amount,
            )


async def main(dsn: str | None, *, backend: str = "asyncpg", prefix: str = "ledger") -> None:
    db = DatabaseManager(dsn, backend=backend, prefix=prefix)
    await db.connect()
    try:
        await db.create_schema()
        alice = await db.open_account("alice", Decimal("100.00"))
        bob = await db.open_account("bob")

        await db.transfer(alice, bob, Decimal("30.00"))
        print("after one transfer:", await db.balance(alice), await db.balance(bob))

        try:
            await db.transfer(alice, 999_999, Decimal("10.00"))
        except UnknownAccount:
            print("to an unknown account: rolled back, alice still has", await db.balance(alice))

        # Ten transfers of 10 race for alice's 70: exactly seven go through.
        results = await asyncio.gather(
            *(db.transfer(alice, bob, Decimal("10.00")) for _ in range(10)),
            return_exceptions=True,
        )
        refused = sum(isinstance(r, InsufficientFunds) for r in results)
        print(f"concurrent transfers: {len(results) - refused} done, {refused} refused")
        print("final:", await db.balance(alice), await db.balance(bob))
        await db.drop_schema()
    finally:
        await db.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("UNIPOOL_DSN")))
