"""Helpers for tests that drive a running farm: start mpfarm in the
background, wait for conditions with bounded loops, inspect its processes.
Every wait has a deadline; every started process is killed at teardown."""
import os
import signal
import subprocess
import time
from pathlib import Path

# one definition of where the binary is and how slow a sanitizer build is
from conftest import MPFARM_BIN as BIN, REPO, SANITIZED, SLOW  # noqa: F401
import storelib


class Farm:
    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.db = self.dir / "media_tracking.db"
        self.out = self.dir / "output"
        self.media = self.dir / "media"
        self.procs = []
        if storelib.PG:
            self.db = storelib.pg_new_db()

    def env(self):
        """The environment of a run, read now (tests set variables)."""
        e = dict(os.environ)
        if storelib.PG:
            e["MPFARM_DB"] = self.db
        return e

    def config(self, text):
        (self.dir / "mpfarm.conf").write_text(text)

    def make_media(self, n, prefix="f", sub=""):
        d = self.media / sub if sub else self.media
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (d / f"{prefix}{i:05d}.wav").write_bytes(b"RIFF" + str(i).encode())
        return d

    def run(self, *args, timeout=120, check=None):
        p = subprocess.run([BIN, *map(str, args)], cwd=self.dir,
                           capture_output=True, timeout=timeout * SLOW,
                           env=self.env())
        if check is not None:
            assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
        return p

    def start(self, *args, log=None):
        logf = open(log or (self.dir / "farm.log"), "ab")
        p = subprocess.Popen([BIN, *map(str, args)], cwd=self.dir,
                             stdout=subprocess.DEVNULL, stderr=logf,
                             start_new_session=True, env=self.env())
        logf.close()
        self.procs.append(p)
        return p

    def log(self):
        f = self.dir / "farm.log"
        return f.read_text(errors="replace") if f.exists() else ""

    def q(self, sql, *params):
        con = storelib.connect(self.db, timeout=30)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def counts(self):
        return dict(self.q("SELECT status, COUNT(*) FROM jobs GROUP BY 1"))

    def workers_of(self, master_pid):
        """pids whose parent is master_pid"""
        kids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == master_pid:
                kids.append(int(d.name))
        return kids

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)


def wait_for(cond, timeout, step=0.05, what="condition"):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
        return st.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def zombies_of(pid):
    z = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            rest = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if rest[0] == "Z" and int(rest[1]) == pid:
            z.append(int(d.name))
    return z
