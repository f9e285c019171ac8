"""FastAPI: the lifespan opens the pool, a dependency borrows a connection per request.

UNIPOOL_DSN=postgresql://... uvicorn examples.fastapi_app:app
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel

import unipool


class NoteIn(BaseModel):
    text: str


class Note(NoteIn):
    id: int


async def connection(request: Request) -> AsyncIterator[unipool.AsyncConnection]:
    """One borrowed connection per request, given back once the endpoint is done."""
    pool: unipool.Pool = request.app.state.pool
    async with pool.acquire() as conn:
        yield conn


Conn = Annotated[unipool.AsyncConnection, Depends(connection)]


def create_app(
    dsn: str | None = None, *, backend: str = "asyncpg", table: str = "example_notes"
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The pool lives as long as the app, on the server's event loop. At
        # shutdown it refuses new requests and gives running ones time to finish.
        pool = unipool.connect(dsn or os.environ.get("UNIPOOL_DSN"), backend=backend, max_size=10)
        async with pool:
            await pool.aexecute(
                f"create table if not exists {table} (id serial primary key, text text)"
            )
            app.state.pool = pool
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/notes", status_code=201)
    async def add_note(note: NoteIn, conn: Conn) -> Note:
        note_id = await conn.fetchval(
            f"insert into {table} (text) values ($1) returning id", note.text
        )
        return Note(id=note_id, text=note.text)

    @app.get("/notes/{note_id}")
    async def get_note(note_id: int, conn: Conn) -> Note:
        row = await conn.fetchrow(f"select id, text from {table} where id = $1", note_id)
        if row is None:
            raise HTTPException(status_code=404, detail="no such note")
        return Note(**dict(row))

    @app.get("/pool")
    async def pool_stats(request: Request) -> dict[str, Any]:
        # No connection needed: the stats are a snapshot of the pool's counters.
        return asdict(request.app.state.pool.stats())

    return app


app = create_app()
