"""The one harness of mpfarm's integration tests: the real binary on real
temporary trees.

Every test gets a `farm`: a private working directory (the binary's cwd, so
media_tracking.db, ./output and ./mpfarm.conf land there) plus helpers to run
the binary (to completion, or in the background), look into its database and
its processes, and build media trees.  Every subprocess is bounded by a
timeout, every wait has a deadline, and processes started with `farm.popen`
or `farm.start` are killed (whole process group) when the test ends, so a
hung farm never hangs the suite.  Tests import the module-level helpers
(`wait_for`, `alive`, ...) from here.

The binary is $MPFARM_BIN, else build/mpfarm beside tests/.  Under
sanitizers (MPFARM_SANITIZED=1, set by `make sanitize`) timeouts stretch.
With MPFARM_TEST_STORE=pg each farm's store is a fresh PostgreSQL database
(storelib.py), named to mpfarm through MPFARM_DB.
"""
import os
import pathlib
import signal
import subprocess
import time

import pytest

import storelib

REPO = pathlib.Path(__file__).resolve().parents[2]
MPFARM_BIN = os.environ.get("MPFARM_BIN") or str(REPO / "build" / "mpfarm")
SANITIZED = os.environ.get("MPFARM_SANITIZED") == "1"
SLOW = 4 if SANITIZED else 1
DEFAULT_TIMEOUT = 120 * SLOW

MEDIA_EXTS = ("mp3", "wav", "m4a", "flac", "ogg", "mp4", "mkv", "webm")


def fsbytes(p):
    """A path (str, bytes or Path) as bytes, for names that are not UTF-8."""
    return os.fsencode(p)


def ini_override(text):
    """The INI text with each key of a section kept at its last setting
    only (earlier lines of it dropped, with their indented continuation
    lines), as tests that append overrides to a base config mean it."""
    def parse(lines):
        sec, out = "", []
        for line in lines:
            s = line.strip()
            if s.startswith("[") and s.endswith("]"):
                sec = s[1:-1]
                out.append(None)
            elif line[:1] in (" ", "\t") or not s or s[0] in "#;" \
                    or "=" not in s:
                out.append("cont" if line[:1] in (" ", "\t") and s else
                           None)
            else:
                out.append((sec, s.split("=", 1)[0].strip()))
        return out
    lines = text.splitlines(keepends=True)
    keys = parse(lines)
    last = {}
    for i, k in enumerate(keys):
        if isinstance(k, tuple):
            last[k] = i
    kept, owner = [], None
    for i, (line, k) in enumerate(zip(lines, keys)):
        if isinstance(k, tuple):
            owner = k
            if last[k] != i:
                owner = "dropped"
                continue
        elif k == "cont" and owner == "dropped":
            continue
        elif k is None:
            owner = None if line.strip().startswith("[") else owner
        kept.append(line)
    return "".join(kept)


class Farm:
    """One working directory and the helpers to drive mpfarm in it."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.db = self.path / "media_tracking.db"
        self.output = self.path / "output"
        self.media = self.path / "media"
        self.bin = MPFARM_BIN
        self.procs = []
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("MPFARM_") and k not in (
                        "ELEVENLABS_API_KEY", "OPENAI_API_KEY",
                        "DEEPL_AUTH_KEY")}
        self.env["LC_ALL"] = "C.UTF-8"
        if SANITIZED:
            for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
                if k in os.environ:
                    self.env[k] = os.environ[k]
        if storelib.PG:
            self.db = storelib.pg_new_db()
            self.env["MPFARM_DB"] = self.db

    # ---- running the binary -------------------------------------------
    def _argv(self, args):
        return [self.bin] + [a if isinstance(a, bytes) else str(a)
                             for a in args]

    def run(self, *args, check=False, timeout=None, env=None, input=None,
            cwd=None, user=None):
        """Run mpfarm to completion; returns CompletedProcess with str
        stdout/stderr (undecodable bytes shown as \\xNN).  `user`, when the
        tests run as root, drops to that uid/gid with setpriv (for
        permission tests)."""
        argv = self._argv(args)
        if user is not None and os.geteuid() == 0:
            argv = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user,
                    "--clear-groups", "--"] + argv
        e = dict(self.env)
        if env:
            e.update(env)
        p = subprocess.run(
            argv, cwd=str(cwd or self.path), env=e, input=input,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=timeout * SLOW if timeout else DEFAULT_TIMEOUT,
            encoding="utf-8", errors="backslashreplace")
        if SANITIZED:
            assert p.returncode != 99 and "Sanitizer" not in p.stderr, \
                p.stderr
        if check and p.returncode != 0:
            raise AssertionError(
                "mpfarm %s exited %d\nstdout:\n%s\nstderr:\n%s" % (
                    " ".join(map(str, args)), p.returncode, p.stdout,
                    p.stderr))
        return p

    def popen(self, *args, env=None, **kw):
        """Start mpfarm in the background in its own process group (killed
        at teardown).  stdout/stderr go to files farm.path/'popen-N.out'
        and '.err' unless given, so a chatty farm never blocks on a pipe."""
        e = dict(self.env)
        if env:
            e.update(env)
        n = len(self.procs)
        if "stdout" not in kw:
            kw["stdout"] = open(self.path / ("popen-%d.out" % n), "wb")
        if "stderr" not in kw:
            kw["stderr"] = open(self.path / ("popen-%d.err" % n), "wb")
        p = subprocess.Popen(self._argv(args), cwd=str(self.path), env=e,
                             start_new_session=True, **kw)
        p.log_out = self.path / ("popen-%d.out" % n)
        p.log_err = self.path / ("popen-%d.err" % n)
        self.procs.append(p)
        return p

    def start(self, *args, log=None, env=None):
        """popen with stdout discarded and stderr appended to one log,
        farm.path/'farm.log' unless given (read it with farm.log())."""
        with open(log or (self.path / "farm.log"), "ab") as logf:
            return self.popen(*args, env=env, stdout=subprocess.DEVNULL,
                              stderr=logf)

    def log(self):
        """What the farms started with farm.start wrote so far."""
        f = self.path / "farm.log"
        return f.read_text(errors="replace") if f.exists() else ""

    def workers_of(self, master_pid):
        """pids whose parent is master_pid (its workers)."""
        kids = []
        for d in pathlib.Path("/proc").iterdir():
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

    def wait(self, proc, timeout=None):
        """Wait for a popen'd process; returns its exit status."""
        return proc.wait(timeout=(timeout or DEFAULT_TIMEOUT) * SLOW)

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            for f in (p.stdout, p.stderr):
                if f is not None and hasattr(f, "close"):
                    f.close()

    def scan(self, *dirs, check=True):
        return self.run("scan", *(dirs or (self.media,)), check=check)

    def sqlite3_cli(self, sql, db=None, timeout=30):
        """The sqlite3 shell, as users of the older tooling query."""
        return subprocess.run(
            ["sqlite3", str(db or self.db), sql], cwd=str(self.path),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
            encoding="utf-8", errors="backslashreplace")

    # ---- the database ----------------------------------------------------
    def connect(self, timeout=10):
        return storelib.connect(self.db, timeout=timeout)

    def query(self, sql, params=()):
        """All rows of one statement (a fresh connection each time)."""
        con = self.connect()
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def scalar(self, sql, params=()):
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def execute(self, sql, params=()):
        """One write in its own transaction."""
        con = self.connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            cur = con.execute(sql, params)
            con.execute("COMMIT")
            return cur.rowcount
        finally:
            con.close()

    def counts(self):
        """{status: count} over every job."""
        return dict(self.query(
            "SELECT status, COUNT(*) FROM jobs GROUP BY 1"))

    def status_counts(self, stage="transcribe", lang=""):
        """{status: count} of one stage's jobs."""
        return dict(self.query(
            "SELECT status, count(*) FROM jobs WHERE stage = ? AND lang = ? "
            "GROUP BY status", (stage, lang)))

    def dump(self):
        """Everything a command could change, for before/after equality."""
        con = self.connect()
        try:
            if storelib.PG:
                return storelib.pg_dump(con)
            return [line for line in con.iterdump()]
        finally:
            con.close()

    # ---- files -----------------------------------------------------------
    def write_config(self, text, name="mpfarm.conf", raw=False):
        """Write a config file in the working directory (./mpfarm.conf is
        read without --config).  Tests build configs as a base plus
        overrides (BASE + "[farm]\nworkers = 4\n"); mpfarm refuses a key
        given twice, so unless raw, a key set again drops its earlier
        line (ini_override)."""
        p = self.path / name
        p.write_text(text if raw else ini_override(text))
        return p

    def make_media(self, n, prefix="f", sub=""):
        """n small .wav files named prefix00000.wav... in farm.media (or
        its folder sub), each with different bytes.  Returns the folder."""
        d = self.media / sub if sub else self.media
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (d / f"{prefix}{i:05d}.wav").write_bytes(b"RIFF" + str(i).encode())
        return d

    def make_tree(self, n, root=None, exts=MEDIA_EXTS, per_dir=100,
                  content=b"RIFF fake media\n", start=0):
        """n small fake media files under root (default farm.media), per_dir
        to a folder, cycling through exts.  Returns their paths."""
        root = pathlib.Path(root or self.media)
        paths = []
        for i in range(start, start + n):
            d = root / ("d%03d" % (i // per_dir))
            if i % per_dir == 0 or not d.exists():
                d.mkdir(parents=True, exist_ok=True)
            p = d / ("rec%06d.%s" % (i, exts[i % len(exts)]))
            with open(p, "wb") as f:
                f.write(content)
            paths.append(p)
        return paths

    def write_output(self, rel, stage="transcribe", lang="", suffix=".txt",
                     text=b"some text\n"):
        """Create an output file the way a worker's rename leaves it."""
        if stage == "transcribe":
            p = fsbytes(self.output / "transcripts") + b"/" + fsbytes(rel) + \
                fsbytes(suffix)
        else:
            p = fsbytes(self.output / "translations" / lang) + b"/" + \
                fsbytes(rel) + fsbytes(suffix)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(text)
        return p


def dead_pid():
    """A pid that is certainly not running (a reaped child)."""
    p = subprocess.Popen(["true"])
    p.wait(timeout=10)
    return p.pid


def wait_for(pred, timeout=10, interval=0.05, what="condition"):
    """Poll pred() until it is truthy; returns its value or raises."""
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout,
                                                                 what))


def alive(pid):
    """True while pid runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        st = pathlib.Path(f"/proc/{pid}/stat").read_text()
        return st.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def zombies_of(pid):
    """pids of pid's children that died and were not reaped."""
    z = []
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            rest = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if rest[0] == "Z" and int(rest[1]) == pid:
            z.append(int(d.name))
    return z


def pytest_collection_modifyitems(config, items):
    """On PostgreSQL, leave out the tests of SQLite-only behaviour
    (listed in pg_sqlite_only.txt, one test function a line), unless
    MPFARM_TEST_PG_ALL=1 asks for every test."""
    if not storelib.PG or os.environ.get("MPFARM_TEST_PG_ALL") == "1":
        return
    listed = pathlib.Path(__file__).with_name("pg_sqlite_only.txt")
    skip = {line.strip() for line in listed.read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    keep, drop = [], []
    for item in items:
        (drop if item.nodeid.split("[")[0] in skip else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session", autouse=True)
def pg_cluster():
    """Stops the PostgreSQL cluster storelib started, whatever happened."""
    yield
    storelib.pg_stop()


@pytest.fixture
def farm(tmp_path):
    if not os.access(MPFARM_BIN, os.X_OK):
        pytest.fail("mpfarm binary not found at %s (build it with `make`, "
                    "or set MPFARM_BIN)" % MPFARM_BIN)
    work = tmp_path / "work"
    work.mkdir()
    f = Farm(work)
    yield f
    f.stop_all()
