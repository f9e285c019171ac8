"""A real replicated cluster for the tests: a primary and a streaming standby.

Both servers are :class:`TempServer` instances (loopback only, run as the account that owns
their directory). The standby is made with ``pg_basebackup -R``; a switchover promotes it
with ``pg_ctl promote``, and the old primary comes back as a standby of the new one with
``pg_rewind -R`` (a fresh base backup if the rewind fails). Which server is the primary
changes with each switchover: read `primary` and `standby`, never a fixed one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg

from unipool._tempserver import TempServer

#: What a server needs to ship WAL to a standby and take it back after a switchover.
SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "10",
    "wal_log_hints": "on",  # pg_rewind needs it (the clusters have no data checksums)
    "hot_standby": "on",
    "wal_keep_size": "64MB",
    "wal_receiver_status_interval": "1s",
    "wal_retrieve_retry_interval": "100ms",  # a restarted primary is streamed from at once
}
_HBA = "\n# unipool cluster\nhost replication all 127.0.0.1/32 trust\n"
_TOOLS = ("pg_basebackup", "pg_rewind")


def missing_tools() -> str | None:
    """Why no cluster can be made here (the server binaries are missing), or None."""
    try:
        bindir = TempServer().bindir
    except RuntimeError as exc:
        return str(exc)
    absent = [t for t in _TOOLS if not os.access(bindir / t, os.X_OK)]
    return f"{', '.join(absent)} not found in {bindir}" if absent else None


def _run(server: TempServer, args: Sequence[str], what: str) -> None:
    """Run a PostgreSQL tool as the account that owns the server's directory."""
    owner = os.stat(server.directory)
    as_owner = os.geteuid() == 0 and owner.st_uid != 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", TZ="UTC", HOME=str(server.directory))
    proc = subprocess.run(
        [str(server.bindir / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        cwd=server.directory,
        env=env,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
        user=owner.st_uid if as_owner else None,
        group=owner.st_gid if as_owner else None,
        extra_groups=[] if as_owner else None,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")


def _own_settings(server: TempServer) -> None:
    """Give a data directory copied from another server this server's port and sockets."""
    with open(server.data_dir / "postgresql.conf", "a", encoding="utf-8") as f:
        f.write(f"\n# unipool cluster\nport = {server.port}\n")
        f.write(f"unix_socket_directories = '{server.directory}'\n")


def _source(server: TempServer) -> str:
    return f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres"


class Cluster:
    """A primary and a streaming standby on loopback; :meth:`cleanup` removes both."""

    def __init__(self) -> None:
        self.servers = (TempServer(settings=SETTINGS), TempServer(settings=SETTINGS))
        self.primary, self.standby = self.servers

    def start(self) -> None:
        """Start the primary, make the standby from it, wait until it streams."""
        try:
            for server in self.servers:
                server.start()
            with open(self.primary.data_dir / "pg_hba.conf", "a", encoding="utf-8") as f:
                f.write(_HBA)
            self.query(self.primary, "select pg_reload_conf()")
            self.query(self.primary, "create table t (id serial primary key, port int)")
            self._base_backup(self.standby, self.primary)
            self.wait_streaming()
        except BaseException:
            self.cleanup()
            raise

    def cleanup(self) -> None:
        for server in self.servers:
            server.cleanup()

    def dsn(self, **params: str) -> str:
        """A multi-host URI naming both servers (in a fixed order, whatever their roles)."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.servers)
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://postgres@{hosts}/postgres" + (f"?{query}" if query else "")

    @staticmethod
    def query(server: TempServer, sql: str) -> object:
        """One value of ``sql`` on ``server`` (autocommit), or None."""
        with psycopg.connect(server.dsn(), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql.encode())
            row = cur.fetchone() if cur.description else None
            return None if row is None else row[0]

    # -- roles -----------------------------------------------------------------------------

    def healthy(self) -> bool:
        """Both servers up, the primary writable, the standby streaming from it."""
        try:
            if not all(s.is_running() for s in self.servers):
                return False
            if self.query(self.primary, "select pg_is_in_recovery()"):
                return False
            if not self.query(self.standby, "select pg_is_in_recovery()"):
                return False
            if self.query(self.standby, "select pg_is_wal_replay_paused()"):
                return False
            return bool(
                self.query(
                    self.primary,
                    "select count(*) = 1 from pg_stat_replication where state = 'streaming'",
                )
            )
        except (psycopg.Error, RuntimeError):
            return False

    def wait_streaming(self, timeout: float = 30.0) -> None:
        """Wait until the standby streams from the primary and has replayed all it got."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise RuntimeError("the standby does not stream from the primary")
            time.sleep(0.05)
        lsn = self.query(self.primary, "select pg_current_wal_lsn()::text")
        sql = f"select pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"
        while not self.query(self.standby, sql):
            if time.monotonic() > deadline:
                raise RuntimeError("the standby does not catch up with the primary")
            time.sleep(0.02)

    def promote(self) -> None:
        """Promote the standby (``pg_ctl promote -w``); both are primaries until `stop_old`."""
        _run(
            self.standby,
            ["pg_ctl", "promote", "-w", "-t", "30", "-D", str(self.standby.data_dir)],
            "pg_ctl promote",
        )
        self.primary, self.standby = self.standby, self.primary

    def rejoin(self) -> None:
        """Bring the stopped old primary (now `standby`) back as a standby of the new one."""
        old, new = self.standby, self.primary
        old.stop()
        self.query(new, "checkpoint")  # pg_rewind reads the new timeline from the control file
        try:
            _run(
                old,
                [
                    "pg_rewind",
                    "-R",
                    "--target-pgdata",
                    str(old.data_dir),
                    "--source-server",
                    _source(new),
                ],
                "pg_rewind",
            )
            _own_settings(old)
            old.start()
        except RuntimeError:
            old.stop("immediate")
            self._base_backup(old, new)
        self.wait_streaming()

    def rebuild(self) -> None:
        """Make the standby again from the primary (after a test left the pair broken)."""
        if not self.primary.is_running():
            self.primary.start()
        if self.query(self.primary, "select pg_is_in_recovery()"):
            self.query(self.primary, "select pg_promote()")
        self.standby.stop("immediate")
        self._base_backup(self.standby, self.primary)
        self.wait_streaming()

    def _base_backup(self, server: TempServer, source: TempServer) -> None:
        server.stop()
        data: Path = server.data_dir
        shutil.rmtree(data)
        os.mkdir(data, 0o700)
        owner = os.stat(server.directory)
        os.chown(data, owner.st_uid, owner.st_gid)
        _run(
            server,
            [
                "pg_basebackup",
                "-D",
                str(data),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "-h",
                "127.0.0.1",
                "-p",
                str(source.port),
                "-U",
                "postgres",
            ],
            "pg_basebackup",
        )
        _own_settings(server)
        server.start()
