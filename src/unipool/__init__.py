"""unipool: one PostgreSQL connection pool for asyncpg, psycopg and psqlpy,
in blocking code, asyncio and trio."""

from ._cluster import ClusterPool, ClusterStats, connect_cluster
from ._connect import connect
from ._connection import AsyncConnection, AsyncTransaction, Connection, Transaction
from ._contexts import AcquireContext, PoolTransaction
from ._errors import (
    CheckViolation,
    CommandTimeout,
    ConnectError,
    ConnectionLost,
    DatabaseError,
    DataError,
    DeadlockDetected,
    DivisionByZero,
    DuplicateTable,
    Error,
    ExclusionViolation,
    ForeignKeyViolation,
    InFailedSQLTransaction,
    InsufficientPrivilege,
    IntegrityError,
    InterfaceError,
    InternalError,
    InvalidTextRepresentation,
    LockNotAvailable,
    NotNullViolation,
    NotSupportedError,
    NumericValueOutOfRange,
    OperationalError,
    PoolClosed,
    PoolError,
    PoolTimeout,
    ProgrammingError,
    QueryCanceled,
    RaiseException,
    ReadOnlySQLTransaction,
    SerializationFailure,
    SQLSyntaxError,
    TooManyWaiters,
    TransactionRollbackError,
    UndefinedColumn,
    UndefinedFunction,
    UndefinedTable,
    UniqueViolation,
    UsageError,
)
from ._options import PoolOptions
from ._pool import Pool
from ._record import Record
from ._stats import PoolStats

__version__ = "0.1.0"

__all__ = [
    "AcquireContext",
    "AsyncConnection",
    "AsyncTransaction",
    "CheckViolation",
    "ClusterPool",
    "ClusterStats",
    "CommandTimeout",
    "ConnectError",
    "Connection",
    "ConnectionLost",
    "DataError",
    "DatabaseError",
    "DeadlockDetected",
    "DivisionByZero",
    "DuplicateTable",
    "Error",
    "ExclusionViolation",
    "ForeignKeyViolation",
    "InFailedSQLTransaction",
    "InsufficientPrivilege",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "InvalidTextRepresentation",
    "LockNotAvailable",
    "NotNullViolation",
    "NotSupportedError",
    "NumericValueOutOfRange",
    "OperationalError",
    "Pool",
    "PoolClosed",
    "PoolError",
    "PoolOptions",
    "PoolStats",
    "PoolTimeout",
    "PoolTransaction",
    "ProgrammingError",
    "QueryCanceled",
    "RaiseException",
    "ReadOnlySQLTransaction",
    "Record",
    "SQLSyntaxError",
    "SerializationFailure",
    "TooManyWaiters",
    "Transaction",
    "TransactionRollbackError",
    "UndefinedColumn",
    "UndefinedFunction",
    "UndefinedTable",
    "UniqueViolation",
    "UsageError",
    "connect",
    "connect_cluster",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        try:
            _obj.__module__ = "unipool"
        except (AttributeError, TypeError):
            pass
del _name, _obj
