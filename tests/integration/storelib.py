"""The store switch of the integration tests: MPFARM_TEST_STORE=pg runs the
store-agnostic tests against PostgreSQL instead of a SQLite file.

A throwaway cluster (tests/pg_cluster.sh: initdb + pg_ctl, socket in a
temporary folder, no TCP) is started at first use and stopped when the
test session ends (conftest's session fixture), even after a failure.
Each test gets its own database (CREATE DATABASE t_<n>), so tests stay
independent.  `connect` gives a connection with the sqlite3 module's shape
(execute(sql, params) with ? placeholders, fetchall, rowcount; bytea read
as bytes), so a test's queries run unchanged on both stores."""
import atexit
import itertools
import os
import re
import pathlib
import sqlite3
import subprocess
import tempfile

STORE = os.environ.get("MPFARM_TEST_STORE", "sqlite")
PG = STORE == "pg"
REPO = pathlib.Path(__file__).resolve().parents[2]
CLUSTER = REPO / "tests" / "pg_cluster.sh"

_server = {"dir": None, "url": None}
_seq = itertools.count(1)


def pg_available():
    return any(pathlib.Path("/usr/lib/postgresql").glob("*/bin/initdb"))


def pg_start():
    """The cluster's base URL, starting it on first use."""
    if _server["url"] is None:
        d = tempfile.mkdtemp(prefix="mpfarm-pg-")
        out = subprocess.run([str(CLUSTER), "start", d], check=True,
                             stdout=subprocess.PIPE, timeout=120,
                             encoding="utf-8")
        _server["dir"] = d
        _server["url"] = out.stdout.strip()
        atexit.register(pg_stop)
    return _server["url"]


def pg_stop():
    if _server["dir"] is not None:
        subprocess.run([str(CLUSTER), "stop", _server["dir"]], timeout=120)
        _server["dir"] = _server["url"] = None


def pg_restart():
    """Restart the cluster's server (fast shutdown: every session is
    ended, as in a real restart) and wait until it accepts connections."""
    d = _server["dir"]
    assert d is not None, "no cluster running"
    binp = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    cmd = [str(binp / "pg_ctl"), "-D", d + "/data", "-l", d + "/server.log",
           "-w", "-m", "fast", "restart"]
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=120)


def pg_new_db():
    """A fresh empty database of the cluster: its URL."""
    base = pg_start()
    name = "t_%d_%d" % (os.getpid(), next(_seq))
    import psycopg2
    con = psycopg2.connect(base)
    con.autocommit = True
    try:
        con.cursor().execute("CREATE DATABASE %s" % name)
    finally:
        con.close()
    return base.replace("postgresql:///postgres", "postgresql:///" + name, 1)


class _PgCursor:
    def __init__(self, cur):
        self.cur = cur

    @property
    def rowcount(self):
        return self.cur.rowcount

    def fetchall(self):
        if self.cur.description is None:
            return []
        return [tuple(bytes(v) if isinstance(v, memoryview) else v
                      for v in row) for row in self.cur.fetchall()]

    def fetchone(self):
        rows = self.fetchall()
        return rows[0] if rows else None

    def __iter__(self):
        return iter(self.fetchall())


class _PgConnection:
    """psycopg2 in autocommit, spoken to like sqlite3."""

    def __init__(self, url):
        import psycopg2
        self.con = psycopg2.connect(url)
        self.con.autocommit = True

    def execute(self, sql, params=()):
        # the few SQLite spellings the tests use, in PostgreSQL's
        sql = re.sub(r"\bAS BLOB\b", "AS bytea", sql, flags=re.I)
        sql = re.sub(r"\b[xX]'([0-9a-fA-F]*)'", r"'\\x\1'::bytea", sql)
        sql = sql.replace("%", "%%").replace("?", "%s")
        if sql.strip().upper() == "BEGIN IMMEDIATE":
            sql = "BEGIN"
        cur = self.con.cursor()
        cur.execute(sql, tuple(params))
        return _PgCursor(cur)

    def close(self):
        self.con.close()


def pg_dump(con):
    """Every row of every table of the store, in order: what `dump`
    compares before and after a command."""
    out = []
    tables = [r[0] for r in con.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = "
        "current_schema() ORDER BY 1").fetchall()]
    for t in tables:
        for row in con.execute("SELECT * FROM %s ORDER BY 1" % t).fetchall():
            out.append("%s %r" % (t, tuple(row)))
    return out


def connect(db, timeout=10):
    """A connection to the test's store (a file path or a URL)."""
    if isinstance(db, str) and db.startswith("postgresql:"):
        return _PgConnection(db)
    return sqlite3.connect(str(db), timeout=timeout, isolation_level=None)
