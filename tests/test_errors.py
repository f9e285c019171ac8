"""The public exception tree: SQLSTATE lookup, hierarchy, pickling and presentation."""

from __future__ import annotations

import copy
import getpass
import pickle

import pytest

from unipool import _errors
from unipool._errors import (
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
    error_class_for_sqlstate,
    make_database_error,
)
from unipool.backends._session import connect_failed, server_named
from unipool.backends.base import ConnectParams

EXCEPTION_CLASSES = [
    obj
    for name in _errors.__all__
    if isinstance(obj := getattr(_errors, name), type) and issubclass(obj, BaseException)
]

LEAVES = {
    "23505": UniqueViolation,
    "23503": ForeignKeyViolation,
    "23502": NotNullViolation,
    "23514": CheckViolation,
    "23P01": ExclusionViolation,
    "22012": DivisionByZero,
    "22003": NumericValueOutOfRange,
    "22P02": InvalidTextRepresentation,
    "42601": SQLSyntaxError,
    "42P01": UndefinedTable,
    "42703": UndefinedColumn,
    "42883": UndefinedFunction,
    "42501": InsufficientPrivilege,
    "42P07": DuplicateTable,
    "40001": SerializationFailure,
    "40P01": DeadlockDetected,
    "57014": QueryCanceled,
    "55P03": LockNotAvailable,
    "25006": ReadOnlySQLTransaction,
    "25P02": InFailedSQLTransaction,
    "P0001": RaiseException,
}


@pytest.mark.parametrize(("code", "cls"), LEAVES.items())
def test_exact_code_finds_its_leaf(code: str, cls: type[DatabaseError]) -> None:
    assert error_class_for_sqlstate(code) is cls
    assert cls.sqlstate == code
    assert cls("boom").sqlstate == code


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("23000", IntegrityError),
        ("23999", IntegrityError),
        ("22000", DataError),
        ("22023", DataError),
        ("42000", ProgrammingError),
        ("42P02", ProgrammingError),
        ("3D000", ProgrammingError),
        ("3F000", ProgrammingError),
        ("26000", ProgrammingError),
        ("34000", ProgrammingError),
        ("21000", ProgrammingError),
        ("53300", OperationalError),
        ("54001", OperationalError),
        ("55006", OperationalError),
        ("57P01", OperationalError),
        ("58030", OperationalError),
        ("HV000", OperationalError),
        ("08006", OperationalError),
        ("40000", TransactionRollbackError),
        ("40003", TransactionRollbackError),
        ("XX000", InternalError),
        ("XX001", InternalError),
        ("25001", InternalError),
        ("2D000", InternalError),
        ("2B000", InternalError),
        ("P0002", InternalError),
        ("38000", InternalError),
        ("39000", InternalError),
        ("0A000", NotSupportedError),
        ("99999", DatabaseError),
        ("01000", DatabaseError),
        ("", DatabaseError),
        (None, DatabaseError),
    ],
)
def test_unknown_code_falls_back_to_its_class(code: str | None, cls: type[DatabaseError]) -> None:
    assert error_class_for_sqlstate(code) is cls


def test_lookup_tolerates_case_and_blanks() -> None:
    assert error_class_for_sqlstate(" 23p01 ") is ExclusionViolation
    assert error_class_for_sqlstate("hv00a") is OperationalError


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (PoolError, Error),
        (PoolTimeout, PoolError),
        (PoolClosed, PoolError),
        (TooManyWaiters, PoolError),
        (UsageError, Error),
        (InterfaceError, Error),
        (ConnectError, Error),
        (ConnectionLost, Error),
        (DatabaseError, Error),
        (IntegrityError, DatabaseError),
        (DataError, DatabaseError),
        (ProgrammingError, DatabaseError),
        (OperationalError, DatabaseError),
        (InternalError, DatabaseError),
        (NotSupportedError, DatabaseError),
        (TransactionRollbackError, OperationalError),
        (SerializationFailure, TransactionRollbackError),
        (DeadlockDetected, TransactionRollbackError),
        (QueryCanceled, OperationalError),
        (LockNotAvailable, OperationalError),
        (ReadOnlySQLTransaction, OperationalError),
        (CommandTimeout, QueryCanceled),
        (InFailedSQLTransaction, InternalError),
        (RaiseException, InternalError),
        (Error, Exception),
    ],
)
def test_hierarchy(child: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(child, parent)


def test_connection_errors_are_not_database_errors() -> None:
    assert not issubclass(ConnectError, DatabaseError)
    assert not issubclass(ConnectionLost, DatabaseError)
    assert not issubclass(PoolError, DatabaseError)


def test_timeouts_are_timeout_errors() -> None:
    assert isinstance(PoolTimeout("no connection in 5.0s"), TimeoutError)
    timeout = CommandTimeout("canceling statement due to statement timeout")
    assert isinstance(timeout, TimeoutError)
    assert isinstance(timeout, QueryCanceled)
    assert timeout.sqlstate == "57014"
    with pytest.raises(TimeoutError):
        raise timeout
    assert not issubclass(QueryCanceled, TimeoutError)


def test_timeout_errors_keep_their_message() -> None:
    assert str(PoolTimeout("no connection in 5.0s")) == "no connection in 5.0s"
    assert str(CommandTimeout("too slow", detail="d")) == "too slow\nDETAIL: d"


def test_make_database_error_fields_and_str() -> None:
    exc = make_database_error(
        "23505",
        'duplicate key value violates unique constraint "t_pkey"',
        detail="Key (id)=(1) already exists.",
        hint="Use another id.",
    )
    assert type(exc) is UniqueViolation
    assert exc.sqlstate == "23505"
    assert exc.message == 'duplicate key value violates unique constraint "t_pkey"'
    assert exc.detail == "Key (id)=(1) already exists."
    assert exc.hint == "Use another id."
    assert str(exc) == (
        'duplicate key value violates unique constraint "t_pkey"\n'
        "DETAIL: Key (id)=(1) already exists.\n"
        "HINT: Use another id."
    )
    assert exc.args == ('duplicate key value violates unique constraint "t_pkey"',)
    assert repr(exc).startswith("UniqueViolation(")


def test_make_database_error_keeps_unknown_codes() -> None:
    exc = make_database_error("23999", "odd constraint")
    assert type(exc) is IntegrityError
    assert exc.sqlstate == "23999"
    assert str(exc) == "odd constraint"
    bare = make_database_error(None, "no code")
    assert type(bare) is DatabaseError
    assert bare.sqlstate is None
    assert bare.detail is None
    assert bare.hint is None


def test_explicit_sqlstate_overrides_class_default() -> None:
    assert QueryCanceled("x", sqlstate="57000").sqlstate == "57000"
    assert DatabaseError("x").sqlstate is None


def test_connect_error_attributes_and_redaction() -> None:
    exc = ConnectError(
        "password authentication failed",
        dsn="postgresql://bob:hunter22@db.example/app",
        sqlstate="28P01",
    )
    assert exc.sqlstate == "28P01"
    assert exc.dsn == "postgresql://bob:***@db.example/app"
    assert "hunter22" not in repr(exc) + str(exc) + repr(exc.__dict__)
    assert str(exc) == "password authentication failed"
    assert ConnectError("refused").dsn is None
    assert ConnectError("refused").sqlstate is None


@pytest.mark.parametrize(
    ("sqlstate", "permanent"),
    [("28P01", True), ("28000", True), ("3D000", True), ("08001", False), (None, False)],
)
def test_connect_error_is_permanent_for_auth_and_missing_database(
    sqlstate: str | None, permanent: bool
) -> None:
    assert ConnectError("x", sqlstate=sqlstate).permanent is permanent
    assert ConnectError("x", sqlstate=sqlstate, permanent=not permanent).permanent is not permanent


@pytest.mark.parametrize(
    ("dsn", "kwargs", "named"),
    [
        (
            "postgresql://bob:hunter22@db.example:6432/app",
            {},
            'server db.example:6432, database "app", user "bob"',
        ),
        (
            "host=db.example user=bob password=hunter22",
            {},
            'server db.example:5432, database "bob", user "bob"',
        ),
        ("postgresql://bob@[::1]/app", {}, 'server [::1]:5432, database "app", user "bob"'),
        (
            "postgresql://bob@/app?host=/run/pg&port=5433",
            {},
            'server /run/pg/.s.PGSQL.5433, database "app", user "bob"',
        ),
        ("postgresql://bob@a:1,b/app", {}, 'servers a:1, b:5432, database "app", user "bob"'),
        (
            "postgresql://bob@a/app",
            {"user": "eve", "dbname": "x", "password": "hunter22"},
            'server a:5432, database "x", user "eve"',
        ),
        (
            "postgresql://bob@a/app",
            {"host": "c,d", "port": 7, "database": "y"},
            'servers c:7, d:7, database "y", user "bob"',
        ),
        (
            "postgresql://bob@a/app",
            {"username": "eve", "db_name": "z"},
            'server a:5432, database "z", user "eve"',
        ),
    ],
)
def test_connect_errors_name_the_server(dsn: str, kwargs: dict[str, object], named: str) -> None:
    params = ConnectParams(dsn, kwargs=kwargs, secrets=("hunter22",))
    error = connect_failed("it failed", params, "08001")
    assert str(error) == f"{named}: it failed"
    assert "hunter22" not in repr(error) + str(error) + str(error.dsn)


def test_connect_errors_name_the_host_that_failed_last_where_known() -> None:
    params = ConnectParams("postgresql://bob@a:1,b:2/app")
    named = 'servers a:1, b:2 (error from b:2), database "app", user "bob"'
    assert server_named(params, last_host=True) == named
    single = ConnectParams("postgresql://bob@a:1/app")
    assert server_named(single, last_host=True) == 'server a:1, database "app", user "bob"'


def test_connect_errors_name_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PGPORT", "5499")
    monkeypatch.setattr(getpass, "getuser", lambda: "osuser")
    named = 'server (default host):5499, database "osuser", user "osuser"'
    assert server_named(ConnectParams(None)) == named
    assert server_named(ConnectParams("postgresql://x:notaport/")).startswith("server (default")


def test_connection_lost_attributes() -> None:
    exc = ConnectionLost("terminating connection due to administrator command", sqlstate="57P01")
    assert exc.sqlstate == "57P01"
    assert exc.message == "terminating connection due to administrator command"
    assert ConnectionLost("eof").sqlstate is None


def _instance(cls: type[BaseException]) -> BaseException:
    if issubclass(cls, DatabaseError):
        return cls("msg", sqlstate="12345", detail="some detail", hint="some hint")
    if cls is ConnectError:
        return ConnectError("no route", dsn="host=h password=pw123", sqlstate="08001")
    if cls is ConnectionLost:
        return ConnectionLost("eof", sqlstate="08006")
    return cls("msg")


@pytest.mark.parametrize("cls", EXCEPTION_CLASSES, ids=lambda cls: cls.__name__)
def test_pickle_round_trip(cls: type[BaseException]) -> None:
    original = _instance(cls)
    original.__dict__["context"] = "kept"  # extra attributes (like 3.11 notes) survive
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        clone = pickle.loads(pickle.dumps(original, protocol=protocol))
        assert type(clone) is cls
        assert clone.args == original.args
        assert str(clone) == str(original)
        assert clone.__dict__ == original.__dict__
        assert clone.__dict__["context"] == "kept"
    assert copy.copy(original).__dict__ == original.__dict__


def test_pickled_attributes() -> None:
    exc = pickle.loads(pickle.dumps(make_database_error("40P01", "deadlock", detail="d")))
    assert isinstance(exc, DeadlockDetected)
    assert (exc.sqlstate, exc.message, exc.detail, exc.hint) == ("40P01", "deadlock", "d", None)
    lost = pickle.loads(pickle.dumps(ConnectionLost("gone", sqlstate="57P01")))
    assert lost.sqlstate == "57P01"
    conn = pickle.loads(pickle.dumps(ConnectError("x", dsn="postgresql://u:pw@h/d")))
    assert conn.dsn == "postgresql://u:***@h/d"
    tls = pickle.loads(pickle.dumps(ConnectError("x", sqlstate="08001", permanent=True)))
    assert (tls.sqlstate, tls.permanent) == ("08001", True)


def test_subclass_defined_elsewhere_pickles_by_reference() -> None:
    exc = pickle.loads(pickle.dumps(_AppError("boom", sqlstate="P0001")))
    assert type(exc) is _AppError
    assert exc.sqlstate == "P0001"


class _AppError(RaiseException):
    """Raised when a test needs a subclass outside unipool."""


def test_unpickling_refuses_foreign_names() -> None:
    with pytest.raises(TypeError):
        _errors._rebuild("make_database_error", ("x",), {})


@pytest.mark.parametrize("cls", EXCEPTION_CLASSES, ids=lambda cls: cls.__name__)
def test_module_is_public(cls: type[BaseException]) -> None:
    assert cls.__module__ == "unipool"
    assert cls.__doc__ is not None
    assert cls.__doc__.startswith("Raised when ")
    assert "\n" not in cls.__doc__


def test_every_exception_class_is_exported() -> None:
    defined = {
        name
        for name, obj in vars(_errors).items()
        if isinstance(obj, type) and issubclass(obj, _errors.Error)
    }
    assert defined <= set(_errors.__all__)
