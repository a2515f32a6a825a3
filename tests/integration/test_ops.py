"""Operations (issue 5): what an operator touches around the farm, tested
against the real tools rather than imitations.

- the manuals render without a warning and document every option of
  `mpfarm --help` and every [farm] key, with the defaults of the code;
- `make install DESTDIR=... PREFIX=/usr` lays out binary, manuals and the
  examples under etc/, and `make uninstall` takes them away;
- the shipped runit service (etc/runit/mpfarm) under a real runsv, the
  shipped supervisord program under a real supervisord, the shipped systemd
  unit through `systemd-analyze verify`, the shipped logrotate file through
  a real logrotate;
- the systemd notify protocol (READY=1, STOPPING=1) on a real datagram
  socket, and --log-file reopened on HUP after the file was moved away.

A test whose tool is missing skips, naming the Debian package to install.
Every wait is bounded; every process started here (supervisors, masters,
workers) is killed at teardown; only unix sockets are used."""
import configparser
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

import storelib
from conftest import MPFARM_BIN as BIN, REPO, SLOW, alive, wait_for

MAN1 = REPO / "mpfarm.1"
MAN5 = REPO / "mpfarm.conf.5"
ETC = REPO / "etc"

# A farm that works for a few seconds: 2 workers, noop jobs of 200 ms.
NOOP_CONF = """
[farm]
workers = 2
check_interval = 1
retry_delay_ms = 50
retry_max_delay_ms = 200
[transcribe]
provider = noop
[translate]
provider = noop
languages = en
[noop]
delay_ms = 200
"""


def need(*tools, package):
    """Skip unless every tool is installed; returns the first one's path
    (sbin included: logrotate lives there, outside a user's PATH)."""
    path = os.environ.get("PATH", os.defpath) + ":/usr/sbin:/sbin"
    found = [shutil.which(t, path=path) for t in tools]
    missing = [t for t, f in zip(tools, found) if f is None]
    if missing:
        pytest.skip("%s not installed (Debian package %s)"
                    % (", ".join(missing), package))
    return found[0]


def sh(*argv, timeout=60, **kw):
    return subprocess.run([str(a) for a in argv], capture_output=True,
                          text=True, timeout=timeout * SLOW, **kw)


def is_ours(pid):
    """pid is still an mpfarm process (not a recycled pid)."""
    try:
        arg0 = Path("/proc/%d/cmdline" % pid).read_bytes().split(b"\0")[0]
    except OSError:
        return False
    # a master or worker shows its title ("mpfarm: worker 1 idle")
    return arg0 == os.fsencode(BIN) or arg0.startswith(b"mpfarm: ")


class Tracker:
    """Every mpfarm pid seen (masters, workers), SIGKILLed at teardown."""

    def __init__(self, farm):
        self.farm = farm
        self.pids = set()

    def master(self, pid):
        self.pids.add(pid)
        self.pids.update(self.farm.workers_of(pid))
        return pid

    def workers(self, pid):
        w = self.farm.workers_of(pid)
        self.pids.update(w)
        return w

    def kill_all(self):
        for pid in self.pids:
            if alive(pid) and is_ours(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def in_progress(farm):
    return farm.query("SELECT COUNT(*) FROM jobs WHERE status='in-progress'")[0][0]

def freeze_with_job_in_flight(farm, workers):
    """SIGSTOP the workers at a moment the database shows a job in
    progress (thawing and trying again while it shows none), so a master
    killed next always leaves something for the restart to recover.
    Bounded: gives up after about 10 s."""
    for _ in range(200):
        for w in workers:
            try:
                os.kill(w, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        if in_progress(farm) > 0:
            return
        for w in workers:
            try:
                os.kill(w, signal.SIGCONT)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    raise AssertionError("no job in progress to freeze")



def assert_all_done_once(farm, njobs):
    assert farm.counts() == {"completed": njobs}, farm.counts()
    assert farm.query("SELECT job_id FROM attempts WHERE outcome='completed' "
                      "GROUP BY job_id HAVING COUNT(*) != 1") == []


def workers_gone(pids):
    return not any(alive(p) for p in pids)


# ---- (1) manuals -----------------------------------------------------------

def roff_text(path):
    """The page's source with roff escapes for '-' and fonts undone, so
    option and key names can be searched for."""
    s = path.read_text()
    s = s.replace("\\-", "-").replace("\\&", "").replace("\\%", "")
    return re.sub(r"\\f[BIRP]", "", s)


def farm_keys():
    """[farm] keys and their defaults, from the code that parses them."""
    src = (REPO / "common" / "common_config.c").read_text()
    body = src[src.index("\nconfig_farm_set("):]
    body = body[:body.index("\n}\n")]
    keys = re.findall(r'"([a-z_]+)"', body)
    assert "workers" in keys and "log_level" in keys, keys
    fields = dict(re.findall(r'\{ "([a-z_]+)", &cfg->([a-z_]+),', body))
    dflt_src = src[src.index("\nconfig_defaults("):]
    dflt_src = dflt_src[:dflt_src.index("\n}\n")]
    values = dict(re.findall(r"cfg->([a-z_]+) = (\d+);", dflt_src))
    defaults = {k: values.get(fields[k], "0") for k in fields}
    return list(dict.fromkeys(keys)), defaults


SECTIONS = {"farm", "transcribe", "translate", "elevenlabs", "openai",
            "deepl", "exec", "noop", "serve"}
# keys the code reads through a variable or a table, not a literal
INDIRECT_KEYS = {"provider", "languages", "transcribe_command",
                 "translate_command", "diarize", "num_speakers",
                 "tag_audio_events", "timestamps_granularity"}


def provider_keys():
    """Every key outside [farm] the code reads: the last string literal of
    each config_get*/config_stage_get/opt_long call, plus INDIRECT_KEYS."""
    keys = set(INDIRECT_KEYS)
    call = re.compile(r"\b(?:config_get(?:_long|_double)?|config_stage_get|"
                      r"opt_long)\(")
    for f in sorted((REPO / "worker").glob("*.c")) + sorted(
            (REPO / "master").glob("*.c")):
        src = f.read_text()
        for m in call.finditer(src):
            depth, i = 1, m.end()
            while depth and i < len(src):
                depth += {"(": 1, ")": -1}.get(src[i], 0)
                i += 1
            lits = re.findall(r'"([a-z_]+)"', src[m.end():i])
            if lits and lits[-1] not in SECTIONS:
                keys.add(lits[-1])
    return keys


@pytest.mark.parametrize("page", [MAN1, MAN5], ids=lambda p: p.name)
def test_man_page_renders_clean(page):
    need("man", package="man-db")
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_DISABLE_SECCOMP="1")
    p = sh("man", "--warnings", "-l", page, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stderr == "", p.stderr
    long_lines = [l for l in p.stdout.splitlines() if len(l) > 80]
    assert long_lines == [], long_lines
    if shutil.which("groff"):
        p = sh("groff", "-man", "-ww", "-z", "-Tutf8", page)
        assert p.returncode == 0 and p.stderr == "", p.stderr


COMMANDS = ("run", "scan", "status", "failed", "show", "retry", "fix",
            "check", "config", "signal", "serve", "migrate", "help")


def test_every_option_is_in_the_manual():
    p = sh(BIN, "--help")
    assert p.returncode == 0
    opts = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", p.stdout))
    assert "--workers" in opts and "--durable" in opts, opts
    for cmd in COMMANDS:
        # both spellings of a command's help print the same text
        h = sh(BIN, "help", cmd)
        assert h.returncode == 0 and h.stdout.startswith(
            "usage: mpfarm " + cmd), (cmd, h.stdout, h.stderr)
        assert sh(BIN, cmd, "--help").stdout == h.stdout, cmd
        opts |= set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", h.stdout))
    text = roff_text(MAN1)
    missing = [o for o in sorted(opts)
               if not re.search(re.escape(o) + r"(?![a-z-])", text)]
    assert missing == [], "options of --help missing from mpfarm.1"
    # and the OPTIONS section documents nothing that --help lacks
    section = text[text.index(".SH OPTIONS"):text.index(".SH SIGNALS")]
    tagged = set(re.findall(r"\.TP\n\.BI? (--[a-z-]+)", section))
    assert tagged == opts, (tagged - opts, opts - tagged)
    for word in COMMANDS:
        assert re.search(r"\.B(?:R|I)? \[?%s" % word, text), word


def test_manual_covers_signals_exits_files_environment():
    text = roff_text(MAN1)
    for sig in ("SIGTERM", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGHUP",
                "SIGTTIN", "SIGTTOU"):
        assert sig in text, sig
    exits = text[text.index(".SH EXIT STATUS"):text.index(".SH ENVIRONMENT")]
    for code in "0123":
        assert ".TP\n.B %s\n" % code in exits, code
    for var in ("MPFARM_DB", "ELEVENLABS_API_KEY", "OPENAI_API_KEY",
                "DEEPL_AUTH_KEY", "NOTIFY_SOCKET"):
        assert ".B %s\n" % var in text, var
    for f in ("media_tracking.db", ".lock", ".status", "transcripts/",
              "translations/", "processing_status"):
        assert f in text, f
    for old in ("parallel_transcription.py", "parallel_translation.py",
                "monitor_and_restart.py", "fix_stalled_files.py",
                "retry_failed_transcriptions.py",
                "check_missing_transcripts.py"):
        assert old in text, old


def test_every_farm_key_is_in_conf5_and_the_example():
    keys, defaults = farm_keys()
    man = roff_text(MAN5)
    example = (ETC / "mpfarm.conf.example").read_text()
    for key in keys:
        assert re.search(r"^\.BR? %s(?: |$)" % key, man, re.M), \
            "[farm] %s missing from mpfarm.conf.5" % key
        assert re.search(r"^#%s = " % key, example, re.M), \
            "[farm] %s missing from etc/mpfarm.conf.example" % key
    for key, value in defaults.items():
        assert re.search(r"^\.BR %s \" \(default %s[;) ]" % (key, value),
                         man, re.M), "%s default %s in mpfarm.conf.5" % (
                             key, value)
        assert re.search(r"^#%s = %s$" % (key, value), example, re.M), \
            "%s default %s in the example" % (key, value)
    keys = provider_keys()
    assert {"base_url", "api_key_file", "max_concurrency", "rate",
            "delay_ms", "model", "command"} <= keys, keys
    for key in sorted(keys):
        assert re.search(r"^\.BR? %s(?: |$)" % key, man, re.M), \
            "key %s (read by the code) missing from mpfarm.conf.5" % key
        assert re.search(r"^#%s = " % key, example, re.M), \
            "key %s (read by the code) missing from the example" % key
    for section in ("[farm]", "[transcribe]", "[translate]",
                    "[translate.LANG]", "[elevenlabs]", "[openai]",
                    "[deepl]", "[exec]", "[noop]"):
        assert section in man, section


def test_example_config_is_accepted(tmp_path):
    """The example as shipped, and with every key uncommented, passes the
    strict parser and every provider's check before a run (a config error
    would exit 2 naming the file or key).  No media: no request is made."""
    text = (ETC / "mpfarm.conf.example").read_text()
    full = re.sub(r"^#([a-z_]+ = )", r"\1", text, flags=re.M)
    assert full.count("\n") == text.count("\n")
    env = dict(os.environ, ELEVENLABS_API_KEY="k1", OPENAI_API_KEY="k2",
               DEEPL_AUTH_KEY="k3:fx")
    env.pop("MPFARM_DB", None)
    for name, body in (("as-shipped.conf", text), ("all-keys.conf", full)):
        cfg = tmp_path / name
        cfg.write_text(body)
        p = sh(BIN, "--config", cfg, "--db", tmp_path / "none.db", "status",
               cwd=tmp_path, env=env)
        assert p.returncode != 2 and name not in p.stderr, p.stderr
        p = sh(BIN, "--config", cfg, "--db", tmp_path / (name + ".db"),
               "--output", tmp_path / "out", "--log-file",
               tmp_path / (name + ".log"), "run", cwd=tmp_path, env=env)
        assert p.returncode == 0, p.stderr
        assert "nothing to do" in p.stderr


# ---- (2) make install ------------------------------------------------------

def test_makefile_includes_install_fragment():
    mk = (REPO / "Makefile").read_text()
    assert re.search(r"^-?include mk/install\.mk$", mk, re.M), \
        "add `include mk/install.mk` at the end of the top Makefile"


def make(*args, dest):
    mk = (REPO / "Makefile").read_text()
    files = ["-f", "Makefile"]
    if not re.search(r"^-?include mk/install\.mk$", mk, re.M):
        files += ["-f", "mk/install.mk"]   # until the include lands
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    return sh("make", "--no-print-directory", *files, *args,
              "DESTDIR=%s" % dest, "PREFIX=/usr", "INSTALL_BIN=%s" % BIN,
              cwd=REPO, env=env, timeout=120)


def test_install_and_uninstall(tmp_path):
    need("make", package="make")
    dest = tmp_path / "dest"
    p = make("install", dest=dest)
    assert p.returncode == 0, p.stdout + p.stderr
    ex = dest / "usr/share/mpfarm/examples"
    want = {
        "usr/bin/mpfarm": 0o755,
        "usr/share/man/man1/mpfarm.1": 0o644,
        "usr/share/man/man5/mpfarm.conf.5": 0o644,
        "usr/share/mpfarm/examples/mpfarm.conf.example": 0o644,
        "usr/share/mpfarm/examples/systemd/mpfarm.service": 0o644,
        "usr/share/mpfarm/examples/supervisord/mpfarm.conf": 0o644,
        "usr/share/mpfarm/examples/logrotate.d/mpfarm": 0o644,
        "usr/share/mpfarm/examples/runit/mpfarm/run": 0o755,
        "usr/share/mpfarm/examples/runit/mpfarm/finish": 0o755,
        "usr/share/mpfarm/examples/runit/mpfarm/check": 0o755,
        "usr/share/mpfarm/examples/runit/mpfarm/log/run": 0o755,
        "usr/share/mpfarm/examples/systemd/mpfarm-serve.service": 0o644,
        "usr/share/mpfarm/examples/supervisord/mpfarm-serve.conf": 0o644,
        "usr/share/mpfarm/examples/runit/mpfarm-serve/run": 0o755,
    }
    got = {str(f.relative_to(dest)): f.stat().st_mode & 0o777
           for f in dest.rglob("*") if f.is_file()}
    assert got == want
    # the installed binary runs, and is the one that was built
    v = sh(dest / "usr/bin/mpfarm", "--version")
    assert v.returncode == 0 and v.stdout == sh(BIN, "--version").stdout
    assert re.match(r"mpfarm \d+\.\d+", v.stdout)
    # the examples name where the binary went, not the /usr/local default
    for f in ("systemd/mpfarm.service", "supervisord/mpfarm.conf",
              "runit/mpfarm/run", "systemd/mpfarm-serve.service",
              "supervisord/mpfarm-serve.conf", "runit/mpfarm-serve/run"):
        t = (ex / f).read_text()
        assert "/usr/bin/mpfarm" in t and "/usr/local/" not in t, f
    assert "/usr/share/mpfarm/examples" in (
        dest / "usr/share/man/man1/mpfarm.1").read_text()
    if shutil.which("man"):
        m = sh("man", "-l", dest / "usr/share/man/man5/mpfarm.conf.5",
               env=dict(os.environ, MANWIDTH="80"))
        assert m.returncode == 0 and "workers" in m.stdout
    p = make("uninstall", dest=dest)
    assert p.returncode == 0, p.stdout + p.stderr
    assert [f for f in dest.rglob("*") if f.is_file()] == []
    assert not (dest / "usr/share/mpfarm").exists()


# ---- (3) runit ---------------------------------------------------------------

class Runit:
    """etc/runit/mpfarm, copied as is into a temporary service folder whose
    ./conf points it at this build, a temporary farm and log folder, run by
    a real runsv.  The database lives outside the working folder and is
    named by ./env/MPFARM_DB, as API keys would be (chpst -e)."""

    def __init__(self, tmp_path, farm):
        self.farm = farm
        self.svc = tmp_path / "svc"
        self.logdir = tmp_path / "log"
        shutil.copytree(ETC / "runit" / "mpfarm", self.svc, symlinks=True)
        (self.svc / "conf").write_text(
            "MPFARM=%s\nMPFARM_DIR=%s\nMPFARM_CONFIG=%s\nMPFARM_USER=\n"
            "MPFARM_LOGDIR=%s\nMPFARM_LOG_USER=\n" % (
                BIN, farm.path, farm.path / "mpfarm.conf", self.logdir))
        data = tmp_path / "data"
        data.mkdir()
        farm.db = data / "jobs.db"
        (self.svc / "env").mkdir(mode=0o700)
        (self.svc / "env" / "MPFARM_DB").write_text("%s\n" % farm.db)
        self.runsv = None

    def start(self):
        self.runsv = subprocess.Popen(
            ["runsv", str(self.svc)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        # sv talks to runsv through supervise/ok, which runsv creates
        wait_for(lambda: (self.svc / "supervise" / "ok").exists() and
                 (self.svc / "log" / "supervise" / "ok").exists(), 10,
                 what="runsv to start")

    def sv(self, *args, wait=None):
        argv = ["sv"] + (["-w", str(int(wait * SLOW))] if wait else [])
        return sh(*argv, *args, self.svc, timeout=(wait or 10) + 30)

    def pid(self):
        try:
            t = (self.svc / "supervise" / "pid").read_text().strip()
        except OSError:
            return 0
        return int(t) if t else 0

    def log(self):
        f = self.logdir / "current"
        return f.read_text(errors="replace") if f.exists() else ""

    def exits(self):
        return re.findall(r"event=service_exit supervisor=runit "
                          r"exit_code=(-?\d+) signal=(\d+)", self.log())

    def stop(self):
        if self.runsv is None:
            return
        if self.runsv.poll() is None:
            for d in (self.svc, self.svc / "log"):
                sh("sv", "-w", "10", "exit", d, timeout=30)
            try:
                self.runsv.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for pidfile in (self.svc / "supervise" / "pid",
                        self.svc / "log" / "supervise" / "pid"):
            try:
                pid = int(pidfile.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid > 0 and alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.runsv.poll() is None:
            try:
                os.killpg(self.runsv.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.runsv.wait(timeout=10)


@pytest.fixture
def runit(tmp_path, farm):
    need("runsv", "sv", "svlogd", "chpst", package="runit")
    r = Runit(tmp_path, farm)
    t = Tracker(farm)
    yield r, t
    r.stop()
    t.kill_all()


def test_runit_service(farm, runit):
    r, t = runit
    farm.write_config(NOOP_CONF)
    nfiles = 40
    farm.make_media(nfiles)
    farm.run("scan", farm.media, "--db", farm.db, check=True)
    r.start()

    # `sv start` waits for ./check: the status file names a live master
    p = r.sv("start", wait=30)
    assert p.returncode == 0, p.stdout + p.stderr + r.log()
    pid = t.master(r.pid())
    wait_for(lambda: len(t.workers(pid)) == 2, 15, what="2 workers")
    assert "event=farm_start" in r.log()
    assert "db=%s" % farm.db in r.log(), "./env/MPFARM_DB not used"

    # sv 1 = USR1: one stats line, in svlogd's log
    assert r.sv("1").returncode == 0
    wait_for(lambda: re.search(r"pid=%d event=stats .*workers_live=2" % pid,
                               r.log()), 10, what="stats line in the log")

    # sv down while jobs run: graceful, exit 0, nothing left in-progress
    wait_for(lambda: in_progress(farm) > 0, 10, what="jobs in progress")
    workers = t.workers(pid)
    p = r.sv("down", wait=60)
    assert p.returncode == 0, p.stdout + p.stderr
    wait_for(lambda: r.exits(), 15, what="./finish to log the exit")
    assert r.exits() == [("0", "0")], r.log()
    assert "reason=TERM" in r.log()
    assert not alive(pid) and workers_gone(workers)
    assert in_progress(farm) == 0
    done_at_down = farm.counts().get("completed", 0)
    assert done_at_down < nfiles * 2, "finished before it could be stopped"

    # up again, then kill -9 the master mid-job: its workers die with it,
    # runsv starts a new master, which recovers the jobs and finishes
    assert r.sv("start", wait=30).returncode == 0
    pid = t.master(r.pid())
    wait_for(lambda: len(t.workers(pid)) == 2, 15, what="2 workers")
    wait_for(lambda: in_progress(farm) > 0, 10, what="jobs in progress")
    workers = t.workers(pid)
    freeze_with_job_in_flight(farm, workers)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: workers_gone(workers), 10,
             what="workers to die with their master")
    wait_for(lambda: r.pid() not in (0, pid), 15, what="runsv to restart it")
    new = t.master(r.pid())
    wait_for(lambda: ("-1", "9") in r.exits(), 10, what="kill -9 logged")
    wait_for(lambda: "event=recovered" in r.log(), 10, what="recovery")
    wait_for(lambda: farm.counts() == {"completed": nfiles * 2}, 60,
             what="the new master to finish every job")
    assert_all_done_once(farm, nfiles * 2)

    # sv term: TERM, graceful exit 0, and runsv starts it again (want up)
    workers = t.workers(new)
    assert r.sv("term").returncode == 0
    wait_for(lambda: r.pid() not in (0, new), 30, what="restart after term")
    t.master(r.pid())
    assert not alive(new) and workers_gone(workers)
    wait_for(lambda: len(r.exits()) == 3, 15, what="the term exit logged")
    assert r.exits()[-1] == ("0", "0"), r.log()
    # (a TERM before the new master has set up its signals would kill it
    # outright: wait until ./check says it is up)
    assert r.sv("start", wait=30).returncode == 0

    p = r.sv("down", wait=60)
    assert p.returncode == 0, p.stdout + p.stderr
    wait_for(lambda: len(r.exits()) == 4, 15, what="the last exit logged")
    assert r.exits() == [("0", "0"), ("-1", "9"), ("0", "0"), ("0", "0")]
    assert in_progress(farm) == 0
    assert [p for p in t.pids if alive(p) and is_ours(p)] == []


# ---- (4) supervisord ---------------------------------------------------------

class Supervisor:
    """A private supervisord (own config, unix socket, logs) running the
    [program:mpfarm] section of etc/supervisord/mpfarm.conf with only its
    paths (and user, startsecs) changed."""

    def __init__(self, tmp_path, farm):
        self.dir = tmp_path / "supervisor"
        self.dir.mkdir()
        self.conf = self.dir / "supervisord.conf"
        self.log = self.dir / "mpfarm.log"
        shipped = configparser.ConfigParser(interpolation=None,
                                            comment_prefixes=(";", "#"))
        shipped.read(ETC / "supervisord" / "mpfarm.conf")
        prog = dict(shipped["program:mpfarm"])
        self.shipped = dict(prog)
        prog.update(
            command="%s --watch --config %s" % (BIN, farm.path / "mpfarm.conf"),
            directory=str(farm.path), stdout_logfile=str(self.log),
            startsecs="1")
        prog.pop("user", None)
        if storelib.PG:
            # a farm on PostgreSQL: its URL as the shipped file suggests
            # (supervisord passes its own environment, not the farm's)
            assert '"' not in farm.db and "%" not in farm.db
            prog["environment"] = 'MPFARM_DB="%s"' % farm.db
        sock = self.dir / "s.sock"
        lines = [
            "[unix_http_server]", "file=%s" % sock, "",
            "[supervisord]", "logfile=%s" % (self.dir / "supervisord.log"),
            "pidfile=%s" % (self.dir / "supervisord.pid"),
            "childlogdir=%s" % self.dir, "nodaemon=true", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = "
            "supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", "serverurl=unix://%s" % sock, "",
            "[program:mpfarm]"] + ["%s=%s" % kv for kv in prog.items()]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["supervisord", "-n", "-c", str(self.conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, cwd=str(self.dir),
            start_new_session=True)

    def ctl(self, *args):
        return sh("supervisorctl", "-c", self.conf, *args, timeout=120)

    def state(self):
        p = self.ctl("status", "mpfarm")
        m = re.search(r"^mpfarm\s+(\S+)", p.stdout, re.M)
        return m.group(1) if m else ""

    def pid(self):
        p = self.ctl("pid", "mpfarm")
        return int(p.stdout.strip()) if p.stdout.strip().isdigit() else 0

    def text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.ctl("shutdown")
        try:
            self.proc.wait(timeout=30 * SLOW)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def supervisor(tmp_path, farm):
    need("supervisord", "supervisorctl", package="supervisor")
    s = Supervisor(tmp_path, farm)
    t = Tracker(farm)
    yield s, t
    s.stop()
    t.kill_all()


def test_supervisord_program(farm, supervisor):
    s, t = supervisor
    sp = s.shipped
    assert sp["stopsignal"] == "TERM"
    assert sp["stopasgroup"] == "false" and sp["killasgroup"] == "true"
    assert int(sp["stopwaitsecs"]) > 30, "stopwaitsecs must exceed --grace"
    assert set(sp["exitcodes"].split(",")) == {"0", "3"}
    assert "--watch" in sp["command"]

    # 60 jobs of 0.6 s on 2 workers: about 18 s of work, so the master is
    # killed with jobs in flight even when supervisord starts slowly
    farm.write_config(NOOP_CONF.replace("delay_ms = 200", "delay_ms = 600"))
    nfiles = 30
    farm.make_media(nfiles)
    farm.run("scan", farm.media, check=True)
    s.start()
    wait_for(lambda: s.state() == "RUNNING", 30, interval=0.2,
             what="supervisord to start mpfarm")
    pid = t.master(s.pid())
    wait_for(lambda: len(t.workers(pid)) == 2, 15, what="2 workers")

    p = s.ctl("signal", "USR1", "mpfarm")
    assert p.returncode == 0, p.stdout
    wait_for(lambda: "pid=%d event=stats" % pid in s.text(), 10,
             what="stats line in supervisord's log of mpfarm")

    # crash: the master is SIGKILLed; supervisord starts a new one, the
    # old workers are gone, the new master recovers and finishes
    wait_for(lambda: in_progress(farm) > 0, 10, what="jobs in progress")
    workers = t.workers(pid)
    freeze_with_job_in_flight(farm, workers)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: workers_gone(workers), 10,
             what="workers to die with their master")
    wait_for(lambda: s.pid() not in (0, pid) and s.state() == "RUNNING", 30,
             interval=0.2, what="supervisord to restart mpfarm")
    new = t.master(s.pid())
    wait_for(lambda: "event=recovered" in s.text(), 10, what="recovery")
    wait_for(lambda: farm.counts() == {"completed": nfiles * 2}, 60,
             what="every job completed")
    assert_all_done_once(farm, nfiles * 2)

    # a stop through supervisorctl is graceful and expected (exit 0)
    workers = t.workers(new)
    p = s.ctl("stop", "mpfarm")
    assert "stopped" in p.stdout, p.stdout
    assert s.state() == "STOPPED"
    assert not alive(new) and workers_gone(workers)
    assert "event=farm_exit" in s.text()
    slog = (s.dir / "supervisord.log").read_text()
    assert "stopped: mpfarm (exit status 0)" in slog, slog
    assert "exited: mpfarm (terminated by SIGKILL; not expected)" in slog
    assert in_progress(farm) == 0

    # and it starts again
    p = s.ctl("start", "mpfarm")
    assert "started" in p.stdout, p.stdout
    last = t.master(s.pid())
    assert last not in (0, new)
    s.stop()
    assert not alive(last)
    assert [p for p in t.pids if alive(p) and is_ours(p)] == []


# ---- (5) systemd -------------------------------------------------------------

def test_systemd_unit_verifies(tmp_path):
    need("systemd-analyze", package="systemd")
    unit = (ETC / "systemd" / "mpfarm.service").read_text()
    svc = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert svc["Type"] == "notify"
    assert svc["KillMode"] == "mixed"
    assert int(svc["TimeoutStopSec"]) > 30, "must exceed the default --grace"
    assert svc["NoNewPrivileges"] == "yes"
    assert svc["ProtectSystem"] == "strict"
    assert "/var/lib/mpfarm" in svc["ReadWritePaths"].split()
    assert svc["PrivateTmp"] == "yes"
    assert "3" in svc["SuccessExitStatus"].split()
    assert "--watch" in svc["ExecStart"]
    # verify a copy whose ExecStart names the binary under test, with the
    # manuals of Documentation= findable
    copy = tmp_path / "mpfarm.service"
    copy.write_text(unit.replace("/usr/local/bin/mpfarm", BIN))
    man = tmp_path / "man"
    for page, sec in ((MAN1, "man1"), (MAN5, "man5")):
        (man / sec).mkdir(parents=True, exist_ok=True)
        shutil.copy(page, man / sec / page.name)
    env = dict(os.environ, MANPATH=str(man), SYSTEMD_LOG_LEVEL="notice")
    p = sh("systemd-analyze", "verify", copy, env=env, timeout=120)
    if "man" in p.stderr and shutil.which("man") is None:
        p = sh("systemd-analyze", "verify", "--man=no", copy, env=env,
               timeout=120)
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr


# ---- (6) the notify protocol ---------------------------------------------------

def recv_notify(sock, deadline):
    """One datagram and the pid that sent it (SCM_CREDENTIALS)."""
    sock.settimeout(max(0.05, deadline - time.monotonic()))
    msg, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    pid = 0
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", data[:12])[0]
    return msg.decode(errors="replace"), pid


def wait_notify(sock, want, timeout, seen):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        try:
            msg, pid = recv_notify(sock, deadline)
        except socket.timeout:
            break
        seen.append((msg, pid))
        if want in msg.split("\n"):
            return pid
    raise AssertionError("no %s from mpfarm; got %r" % (want, seen))


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_notify_ready_and_stopping(farm, tmp_path, kind):
    """Type=notify: READY=1 once workers run, STOPPING=1 at TERM, sent by
    the master itself (systemd's NotifyAccess=main checks the sender)."""
    farm.write_config(NOOP_CONF)
    farm.make_media(6)
    farm.run("scan", farm.media, check=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        if kind == "path":
            name = str(tmp_path / "notify.sock")
            sock.bind(name)
        else:
            name = "@mpfarm-test-%d-%d" % (os.getpid(), time.monotonic_ns())
            sock.bind("\0" + name[1:])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        m = farm.start("run", "--watch", env={"NOTIFY_SOCKET": name})
        seen = []
        pid = wait_notify(sock, "READY=1", 20, seen)
        assert pid == m.pid
        assert len(farm.workers_of(m.pid)) == 2
        m.send_signal(signal.SIGTERM)
        pid = wait_notify(sock, "STOPPING=1", 20, seen)
        assert pid == m.pid
        assert m.wait(timeout=60 * SLOW) == 0
    finally:
        sock.close()


# ---- (7) --log-file, HUP and logrotate ---------------------------------------

def test_log_file_reopened_on_hup(farm):
    farm.write_config(NOOP_CONF)
    farm.make_media(10)
    farm.run("scan", farm.media, check=True)
    log = farm.path / "mpfarm.log"
    moved = farm.path / "mpfarm.log.1"
    m = farm.start("run", "--watch", "--log-file", log)
    wait_for(lambda: log.exists() and "event=farm_start" in log.read_text(),
             10, what="the log file")
    wait_for(lambda: farm.counts() == {"completed": 20}, 30, what="jobs")
    log.rename(moved)
    m.send_signal(signal.SIGHUP)
    wait_for(lambda: log.exists() and "event=log_reopened" in log.read_text(),
             10, what="a fresh log file after HUP")
    size = moved.stat().st_size
    # new work, worker lines and a stats line: all in the fresh file
    farm.make_media(10, prefix="g")
    farm.run("scan", farm.media, check=True)
    wait_for(lambda: farm.counts() == {"completed": 40}, 30, what="new jobs")
    m.send_signal(signal.SIGUSR1)
    wait_for(lambda: "event=stats" in log.read_text(), 10, what="stats line")
    m.send_signal(signal.SIGTERM)
    assert m.wait(timeout=60 * SLOW) == 0
    assert moved.stat().st_size == size, "lines went to the moved-away file"
    assert "event=stats" not in moved.read_text()
    assert "event=farm_exit" in log.read_text()
    assert "level=error" not in farm.log()


def logrotate_conf(tmp_path, log, lockdir):
    text = (ETC / "logrotate.d" / "mpfarm").read_text()
    assert "/var/log/mpfarm/mpfarm.log {" in text
    text = text.replace("/var/log/mpfarm/mpfarm.log", str(log))
    text = text.replace("/var/lib/mpfarm/", str(lockdir) + "/")
    text = text.replace("/usr/local/bin/mpfarm", BIN)
    conf = tmp_path / "logrotate.conf"
    conf.write_text(text)
    conf.chmod(0o644)
    return conf


def test_logrotate_signals_only_a_live_master(farm, tmp_path):
    logrotate = need("logrotate", package="logrotate")
    need("flock", package="util-linux")
    farm.write_config(NOOP_CONF)
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "mpfarm.log"
    conf = logrotate_conf(tmp_path, log, farm.path)
    state = tmp_path / "logrotate.state"

    # a stale lock file naming a live process that is not a master: no HUP
    log.write_text("old line\n")
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (farm.path / "media_tracking.db.lock").write_text("%d\n" % bystander.pid)
        p = sh(logrotate, "-f", "-s", state, conf, cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        time.sleep(0.3)
        assert bystander.poll() is None, "HUP sent to a non-master"
    finally:
        bystander.kill()
        bystander.wait(timeout=10)

    # a running master: logrotate renames, HUPs it, the master reopens
    farm.make_media(4)
    farm.run("scan", farm.media, check=True)
    m = farm.start("run", "--watch", "--log-file", log)
    wait_for(lambda: log.exists() and "event=farm_start" in log.read_text(),
             10, what="the log file")
    p = sh(logrotate, "-f", "-s", state, conf, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rotated = logs / "mpfarm.log.1"
    assert "event=farm_start" in rotated.read_text()
    wait_for(lambda: log.exists() and "event=log_reopened" in log.read_text(),
             10, what="the master to reopen its log")
    m.send_signal(signal.SIGTERM)
    assert m.wait(timeout=60 * SLOW) == 0
    assert "event=farm_exit" in log.read_text()
    assert "event=farm_exit" not in rotated.read_text()
