"""The two faces of a pool: blocking (threads) and async (anyio: asyncio or trio).

A face turns the core's decisions into I/O with its runtime's primitives and
feeds the outcomes back. It holds no pool policy: no sizes, no timeouts, no
choices between connections.
"""
