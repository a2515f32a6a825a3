"""The command line as people type it: options before and after the command
word, options a command does not take, every form of help, `run --dry-run`
(no call, no fork, no write), no provider assumed, `--batch-size` as the
older tooling meant it, and `mpfarm config` with its origins and checks.
"""
import hashlib
import os
import re
import signal
import time

import pytest

import storelib
from conftest import wait_for
from test_commands import no_store, store_relations
from test_providers import ENV, KEYS, config, fake  # noqa: F401 (fixture)

NOOP = """[transcribe]
provider = noop
[translate]
provider = noop
languages = en
"""


def digest(farm):
    """What the farm's store holds, to compare before and after a command.
    On SQLite the bytes of the database and of its write-ahead log (a
    missing log and an empty one are the same: SQLite makes an empty one,
    and the -shm index, for every reader of a WAL database); on PostgreSQL
    (no file) every row of every table (farm.dump)."""
    if storelib.PG:
        return farm.dump()
    h = hashlib.sha256()
    for suffix in ("", "-wal"):
        p = str(farm.db) + suffix
        if os.path.exists(p):
            with open(p, "rb") as f:
                h.update(f.read())
        h.update(b"|")
    return h.hexdigest()


def calls(fake):
    return fake.stats()["requests"]


# ---- options anywhere, checked per command ----------------------------------

@pytest.mark.parametrize("order", ["before", "after"])
def test_config_is_read_wherever_it_stands(farm, order):
    farm.make_tree(3)
    (farm.path / "etc").mkdir()
    if storelib.PG:
        # the config names another PostgreSQL database; MPFARM_DB (which
        # names the farm's own and would beat the file) is left unset
        elsewhere = storelib.pg_new_db()
        del farm.env["MPFARM_DB"]
    else:
        elsewhere = "elsewhere.db"
    conf = farm.write_config(NOOP + "[farm]\ndb = %s\n" % elsewhere,
                             name="etc/my.conf")
    def cmd(*words):
        if order == "before":
            return farm.run("--config", conf, *words)
        return farm.run(*words, "--config", conf)
    p = cmd("scan", farm.media)
    assert p.returncode == 0, p.stderr
    if storelib.PG:
        assert store_relations(elsewhere) > 0
    else:
        assert (farm.path / "elsewhere.db").exists()
    assert no_store(farm), "the default database was created"
    p = cmd("status", "--json")
    assert p.returncode == 0, p.stderr
    assert '"files": 3' in p.stdout
    p = cmd("run")
    assert p.returncode == 0, p.stderr
    assert no_store(farm)


@pytest.mark.parametrize("argv,cmd,opt", [
    (["retry", "--workers", "2"], "retry", "--workers"),
    (["--workers", "2", "retry"], "retry", "--workers"),
    (["status", "--dry-run"], "status", "--dry-run"),
    (["scan", "media", "--watch"], "scan", "--watch"),
    (["check", "--json"], "check", "--json"),
    (["--json"], "run", "--json"),
    (["fix", "--batch-size", "3"], "fix", "--batch-size"),
])
def test_option_the_command_does_not_take_is_refused(farm, argv, cmd, opt):
    farm.write_config(NOOP)
    farm.make_tree(2)
    farm.scan()
    before = digest(farm)
    p = farm.run(*argv)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert cmd in p.stderr and opt in p.stderr, p.stderr
    assert digest(farm) == before


def test_help_in_every_form(farm):
    top = farm.run("--help")
    assert top.returncode == 0 and top.stdout.startswith("usage: mpfarm run")
    assert farm.run("-h").stdout == top.stdout
    assert farm.run("help").stdout == top.stdout
    for cmd in ("scan", "retry", "status", "config", "fix"):
        a = farm.run("help", cmd)
        b = farm.run(cmd, "--help")
        c = farm.run("--help", cmd)
        assert a.returncode == b.returncode == c.returncode == 0
        assert a.stdout == b.stdout == c.stdout
        assert a.stdout.startswith("usage: mpfarm " + cmd)
        assert "--workers" not in a.stdout or cmd == "config"
    assert "--file" in farm.run("retry", "--help").stdout
    assert farm.run("-V").stdout.startswith("mpfarm ")
    assert farm.run("--version").stdout == farm.run("-V").stdout
    p = farm.run("help", "frobnicate")
    assert p.returncode == 2 and "frobnicate" in p.stderr
    assert no_store(farm)


def test_help_that_cannot_be_written_fails(farm):
    with open("/dev/full", "w") as full:
        for argv in (["--help"], ["scan", "--help"], ["--version"]):
            p = farm.popen(*argv, stdout=full)
            assert farm.wait(p) == 1, argv


def test_unknown_command_and_stray_arguments(farm):
    farm.make_tree(1)
    p = farm.run(farm.media)
    assert p.returncode == 2
    assert "unknown command" in p.stderr and "mpfarm scan" in p.stderr
    p = farm.run("status", "extra")
    assert p.returncode == 2 and "extra" in p.stderr
    p = farm.run("scan")
    assert p.returncode == 2 and "folder" in p.stderr
    p = farm.run("--workers")
    assert p.returncode == 2 and "needs a value" in p.stderr
    assert no_store(farm)


# ---- no fake work by default ------------------------------------------------

def test_no_provider_means_no_run(farm):
    farm.make_tree(4)
    farm.scan()
    before = digest(farm)
    p = farm.run()                      # a bare mpfarm, no config at all
    assert p.returncode == 2, p.stderr
    assert "transcribe" in p.stderr and "provider" in p.stderr
    assert "[transcribe] provider" in p.stderr
    assert farm.status_counts() == {"not_started": 4}
    assert not (farm.output / "transcripts").exists()
    assert "worker_spawn" not in p.stderr
    # the read-only part of the database is what it was
    assert farm.scalar("SELECT count(*) FROM attempts") == 0
    del before


def test_a_language_without_provider_is_named(farm):
    farm.write_config("[transcribe]\nprovider = noop\n[translate]\n"
                      "languages = en,de\n[translate.en]\nprovider = noop\n")
    farm.make_tree(2)
    farm.scan()
    p = farm.run("--stage", "transcribe")   # no translation work wanted
    assert p.returncode == 0, p.stderr
    p = farm.run()
    assert p.returncode == 2, p.stderr
    assert "translate:de" in p.stderr and "translate.de" in p.stderr
    assert "translate:en" not in p.stderr
    assert farm.status_counts("translate", "en") == {"not_started": 2}
    # narrowing the run to the language that has a provider works
    p = farm.run("--language", "en")
    assert p.returncode == 0, p.stderr
    assert farm.status_counts("translate", "en") == {"completed": 2}
    assert farm.status_counts("translate", "de") == {"not_started": 2}


def test_a_stage_without_provider_and_without_work_is_fine(farm):
    farm.write_config("[transcribe]\nprovider = noop\n")
    farm.make_tree(2)
    farm.scan()
    p = farm.run()
    assert p.returncode == 0, p.stderr
    assert farm.status_counts() == {"completed": 2}


# ---- run --dry-run ----------------------------------------------------------

def test_run_dry_run_calls_forks_and_writes_nothing(farm, fake):
    farm.write_config(config(fake, langs="de"))
    farm.make_tree(12)
    farm.scan()
    before = digest(farm)
    n0 = calls(fake)
    for argv in (["--dry-run"], ["run", "--dry-run"], ["--dry-run", "run"],
                 ["run", "--dry-run", "--batch-size", "5"]):
        p = farm.run(*argv, env=ENV)
        assert p.returncode == 0, p.stderr
        assert "worker_spawn" not in p.stderr and "farm_start" not in p.stderr
        out = p.stdout
        assert re.search(r"^transcribe\s+elevenlabs\s+12\s", out, re.M), out
        assert re.search(r"^translate:de\s+deepl\s+0\s+12\s", out, re.M), out
        assert "rec000000" in out
    assert "would start 5 of the 12" in p.stdout
    assert len(re.findall(r"^  transcribe ", p.stdout, re.M)) == 5
    assert calls(fake) == n0 == 0
    assert digest(farm) == before
    assert not farm.output.exists()
    if not storelib.PG:
        assert not os.path.exists(str(farm.db) + ".lock")


def test_run_dry_run_without_a_database_creates_none(farm):
    farm.write_config(NOOP)
    p = farm.run("--dry-run")
    assert p.returncode == 0, p.stderr
    # on PostgreSQL the (empty) database exists but holds no farm yet
    assert ("holds no farm yet" if storelib.PG else "does not exist") \
        in p.stdout, p.stdout
    assert no_store(farm)


def test_run_dry_run_refuses_what_run_refuses(farm):
    farm.make_tree(2)
    farm.scan()
    before = digest(farm)
    p = farm.run("--dry-run")
    assert p.returncode == 2 and "provider" in p.stderr
    farm.write_config("[transcribe]\nprovider = openai\n")
    p = farm.run("--dry-run")       # no OPENAI_API_KEY
    assert p.returncode == 2 and "OPENAI_API_KEY" in p.stderr
    assert digest(farm) == before


# ---- --batch-size -----------------------------------------------------------

def test_batch_size_is_jobs_this_run(farm, fake):
    farm.write_config(config(fake, langs="de"))
    farm.make_tree(10)
    farm.scan()
    p = farm.run("--stage", "transcribe", "--batch-size", "3", env=ENV)
    assert p.returncode == 0, p.stderr
    assert farm.status_counts() == {"completed": 3, "not_started": 7}
    assert calls(fake) == 3
    p = farm.run("--batch-size", "4", env=ENV)
    assert p.returncode == 0, p.stderr
    done = sum(farm.scalar("SELECT count(*) FROM jobs WHERE status = "
                           "'completed'") for _ in [0])
    assert done == 7
    # the default is everything
    p = farm.run(env=ENV)
    assert p.returncode == 0, p.stderr
    assert farm.status_counts() == {"completed": 10}
    assert farm.status_counts("translate", "de") == {"completed": 10}


def test_batch_size_under_watch_is_per_interval(farm):
    farm.write_config(NOOP)
    farm.make_tree(6)
    farm.scan()
    p = farm.popen("--watch", "--check-interval", "3600", "--batch-size", "2",
                   "--stage", "transcribe", "--workers", "3")
    wait_for(lambda: farm.status_counts().get("completed") == 2, timeout=30)
    time.sleep(1.5)
    assert farm.status_counts() == {"completed": 2, "not_started": 4}
    p.send_signal(signal.SIGTERM)
    assert farm.wait(p, timeout=60) == 0


# ---- mpfarm config ----------------------------------------------------------

def test_config_shows_origins_and_hides_keys(farm, fake):
    conf = farm.write_config(config(fake, transcribe="openai", langs="de")
                             + "[farm]\njob_timeout = 77\n")
    lines = conf.read_text().splitlines()
    line = 1 + next(i for i, l in enumerate(lines) if l.startswith("job_timeout"))
    env = dict(ENV, MPFARM_DB=str(farm.path / "env.db"))
    p = farm.run("config", "--workers", "4", env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert re.search(r"^workers = 4 .*; command line --workers$", out, re.M)
    assert re.search(r"^job_timeout = 77 .*; mpfarm.conf:%d$" % line, out, re.M)
    assert re.search(r"^grace = 30 .*; default$", out, re.M)
    assert re.search(r"^db = .*env.db .*; environment MPFARM_DB$", out, re.M)
    assert re.search(r"^provider of transcribe = openai", out, re.M)
    assert re.search(r"^openai api key = set .*; environment OPENAI_API_KEY",
                     out, re.M)
    for key in KEYS.values():
        assert key not in out and key not in p.stderr
    assert re.search(r"^ok +transcribe +provider openai ready", out, re.M)
    assert not env["MPFARM_DB"] or not os.path.exists(env["MPFARM_DB"])
    # and it accepts options after the command word only if run takes them
    assert farm.run("config", "--json").returncode == 2


def test_config_lists_every_problem(farm, fake):
    farm.write_config(config(fake, transcribe="openai", langs="de")
                      + "[farm]\noutput = out-is-a-file\n")
    (farm.path / "out-is-a-file").write_text("x")
    p = farm.run("config", env={})          # no key in the environment
    assert p.returncode == 2, p.stdout
    fails = [l for l in p.stdout.splitlines() if l.startswith("FAIL")]
    assert any("OPENAI_API_KEY" in l for l in fails), fails
    assert any("DEEPL_AUTH_KEY" in l for l in fails), fails
    assert any("out-is-a-file" in l and "not a folder" in l for l in fails)
    assert "3 problems" in p.stderr, p.stderr


def test_config_flags_work_without_provider(farm):
    farm.make_tree(2)
    farm.scan()
    p = farm.run("config")
    assert p.returncode == 2
    assert re.search(r"^FAIL +transcribe +2 jobs to do and no provider",
                     p.stdout, re.M), p.stdout


# ---- config values that parse but would break the run ----------------------

@pytest.mark.parametrize("text,needle", [
    ("[openai]\nrate = inf\n", "rate"),
    ("[openai]\nrate = nan\n", "rate"),
    ("[openai]\nrate = -1\n", "rate"),
    ("[deepl]\nmax_concurrency = 4294967295\n", "max_concurrency"),
    ("[deepl]\nmax_concurrency = 2.5\n", "max_concurrency"),
    ("[transcribe]\nprovider = openai\nmodel = \xff\n", "UTF-8"),
    ("[translate]\nlanguages = --verbose\n", "language"),
    ("[farm]\nworkers = 1e3\n", "workers"),
    ("[farm]\nbatch_size = many\n", "batch_size"),
])
def test_bad_values_exit_2_naming_file_and_line(farm, text, needle):
    conf = farm.path / "bad.conf"
    conf.write_bytes(("[farm]\ngrace = 5\n" + text).encode("latin-1"))
    nline = 2 + text.count("\n")
    for argv in (["--config", conf, "run"], ["status", "--config", conf],
                 ["config", "--config", conf]):
        p = farm.run(*argv)
        assert p.returncode == 2, (argv, p.stderr)
        assert "bad.conf:%d:" % nline in p.stderr, p.stderr
        assert needle in p.stderr, p.stderr
