"""SQLAlchemy's ORM on a unipool pool: the pool pools, SQLAlchemy maps.

python examples/sqlalchemy_orm.py [DSN]      (or set UNIPOOL_DSN)
"""

from __future__ import annotations

import os
import sys

from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import unipool
from unipool.sqlalchemy import create_engine


def main(dsn: str | None, *, table: str = "example_books") -> None:
    # The model is made here only so that a test can give it a table of its own.
    class Base(DeclarativeBase):
        pass

    class Book(Base):
        __tablename__ = table
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str] = mapped_column(String(200))

    pool = unipool.connect(dsn, backend="psycopg", max_size=5)
    # No URL and no pool settings: every session borrows from `pool`, and gives
    # the connection back when it commits, rolls back or closes.
    engine = create_engine(pool)
    with pool:
        Base.metadata.create_all(engine)
        with Session(engine) as session, session.begin():  # commits at the end
            session.add_all([Book(title="Dune"), Book(title="Solaris")])
        with Session(engine) as session:
            session.add(Book(title="never saved"))
            session.rollback()
            titles = session.scalars(select(Book.title).order_by(Book.title)).all()
            print("books:", ", ".join(titles))
        # The same connections serve unipool's own API in between.
        print("rows:", pool.fetchval(f"select count(*) from {table}"))
        stats = pool.stats()
        print(f"borrows: {stats.acquires}, connections: {stats.size}, in use: {stats.in_use}")
        Base.metadata.drop_all(engine)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("UNIPOOL_DSN"))
