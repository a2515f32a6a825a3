"""A provider's limits held by several masters together (PostgreSQL pass,
MPFARM_TEST_STORE=pg): masters on this machine act as separate hosts
against one fake provider.  The fake counts requests at once and per
second and answers 429 beyond its limits; with the farm-wide limits it
never has to: concurrency never passes max_concurrency across hosts, the
rate holds for all hosts together, and a 429 answered to one host pauses
the others within a tick."""
import os
import signal
import sqlite3
import subprocess
import time

import pytest

import storelib
from conftest import MPFARM_BIN, SLOW, wait_for
from test_providers import (ENV, MIXED_FAULTS,  # noqa: F401  (fake)
                            config, fake, fake_provider, random_media,
                            transcript, translation)

pytestmark = pytest.mark.skipif(
    not storelib.PG, reason="PostgreSQL pass only (MPFARM_TEST_STORE=pg)")

CONF = """
[farm]
max_attempts = 6
retry_delay_ms = 50
retry_max_delay_ms = 5000
host_timeout = 5
[transcribe]
provider = elevenlabs
[elevenlabs]
base_url = {url}
low_speed_time = 2
{limits}
"""


@pytest.fixture
def farm(farm):
    """conftest's farm, with the fake provider's keys in every run."""
    farm.env.update(ENV)
    return farm


def run_hosts(farm, nhosts, workers, timeout=120):
    logs = [farm.path / ("m%d.log" % i) for i in range(nhosts)]
    ms = [farm.start("run", "--workers", workers, log=logs[i])
          for i in range(nhosts)]
    codes = [m.wait(timeout=timeout * SLOW) for m in ms]
    texts = [lg.read_text(errors="replace") for lg in logs]
    assert codes == [0] * nhosts, (codes, texts)
    done = []
    for t in texts:
        line = [x for x in t.splitlines() if "event=farm_exit" in x][-1]
        done.append(int(line.split("completed=")[1].split()[0]))
    return done, texts


def transcribe_requests(fake):
    return [e for e in fake.stats()["log"]
            if e["path"] == "/v1/speech-to-text"]


def test_concurrency_held_across_hosts(farm, fake):
    n = 24
    farm.write_config(CONF.format(url=fake.url,
                                  limits="max_concurrency = 2\n"))
    farm.make_media(n)
    fake.control(latency_ms=250, max_concurrency=2)
    assert farm.run("scan", farm.media).returncode == 0
    done, _ = run_hosts(farm, 3, 3)
    st = fake.stats()
    assert sum(done) == n, done
    assert farm.counts() == {"completed": n}
    # three hosts of three workers, and never more than two at once
    assert st["max_concurrency"] == 2, st["max_concurrency"]
    assert st["concurrency_limited"] == 0
    assert st["by_status"] == {"200": n}, st["by_status"]
    # the slots were shared, not kept by the first host up
    assert sum(1 for d in done if d > 0) >= 2, done
    # a clean exit leaves no share behind
    assert farm.query("SELECT count(*) FROM provider_slots") == [(0,)]


def test_rate_held_across_hosts(farm, fake):
    n = 24
    rate = 6
    farm.write_config(CONF.format(url=fake.url, limits="rate = %d\n" % rate))
    farm.make_media(n)
    fake.control(rate={"rps": rate, "burst": rate, "retry_after": True})
    assert farm.run("scan", farm.media).returncode == 0
    t0 = time.monotonic()
    done, _ = run_hosts(farm, 3, 3)
    took = time.monotonic() - t0
    st = fake.stats()
    assert sum(done) == n, done
    assert farm.counts() == {"completed": n}
    # each host alone would send 6/s: three together 18/s, and 429s
    assert st["rate_limited"] == 0, st["by_status"]
    assert st["by_status"] == {"200": n}, st["by_status"]
    assert took >= (n - 2 * rate) / rate, took
    # no one-second window holds much more than the rate
    ts = sorted(e["t"] for e in transcribe_requests(fake))
    worst = max(sum(1 for u in ts if t <= u < t + 1.0) for t in ts)
    assert worst <= rate + 2, (worst, ts)


def test_429_pauses_every_host(farm, fake):
    n = 40
    farm.write_config(CONF.format(url=fake.url,
                                  limits="max_concurrency = 6\n"))
    farm.make_media(n)
    fake.control(latency_ms=100)
    assert farm.run("scan", farm.media).returncode == 0
    ms = [farm.start("run", "--workers", 3, log=farm.path / ("m%d.log" % i))
          for i in range(2)]
    # both hosts working, then one request answered 429, Retry-After 3 s
    deadline = time.monotonic() + 30 * SLOW
    while len(transcribe_requests(fake)) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    fake.control(add_faults=[{"kind": "status", "status": 429, "count": 1,
                              "retry_after": "3"}])
    for m in ms:
        assert m.wait(timeout=120 * SLOW) == 0
    assert farm.counts() == {"completed": n}
    log = transcribe_requests(fake)
    hit = [e for e in log if e["status"] == 429]
    assert len(hit) == 1, [e["status"] for e in log]
    t429 = hit[0]["t"] + hit[0]["ms"] / 1000.0
    # requests sent already when the 429 came back may still arrive
    # (latency 100 ms); after one tick nobody sends until it is over
    during = [e for e in log if t429 + 0.4 < e["t"] < t429 + 2.7]
    assert during == [], (t429, during)
    after = [e for e in log if e["t"] >= t429 + 2.7]
    assert after, "nothing ran after the pause"
    # the other host learned it from the database, not from a 429 of its own
    texts = [(farm.path / ("m%d.log" % i)).read_text() for i in range(2)]
    assert any("by=another-host" in t for t in texts), texts


def test_dead_host_share_freed(farm, fake):
    n = 8
    conf = CONF.replace("host_timeout = 5", "host_timeout = 2")
    farm.write_config(conf.format(url=fake.url,
                                  limits="max_concurrency = 2\n"))
    farm.make_media(n)
    fake.control(latency_ms=1500)
    assert farm.run("scan", farm.media).returncode == 0
    a = farm.start("run", "--workers", "2", log=farm.path / "a.log")
    wait_for(lambda: farm.scalar("SELECT count(*) FROM jobs j JOIN hosts h "
                                 "ON h.host_id = j.owner_host WHERE "
                                 "j.status = 'in-progress' AND h.pid = ?",
                                 (a.pid,)) == 2,
             30, what="host A running two jobs")
    b = farm.start("run", "--workers", "2", "--watch", log=farm.path / "b.log")
    wait_for(lambda: farm.scalar("SELECT count(*) FROM provider_slots s "
                                 "JOIN hosts h USING (host_id) WHERE "
                                 "h.pid = ?", (b.pid,)) == 1, 20,
             what="host B asking")
    # A holds the farm's two slots: B runs nothing
    assert farm.query("SELECT s.held FROM provider_slots s JOIN hosts h "
                      "USING (host_id) WHERE h.pid = ?", (b.pid,)) == [(0,)]
    os.killpg(a.pid, signal.SIGKILL)
    a.wait(timeout=10)
    killed = time.monotonic()
    # A's share goes with its jobs: B gets both slots and finishes
    wait_for(lambda: farm.query("SELECT s.held FROM provider_slots s JOIN "
                                "hosts h USING (host_id) WHERE h.pid = ?",
                                (b.pid,)) == [(2,)], 2 + 8,
             what="B's share grown")
    assert time.monotonic() - killed < (2 + 8) * SLOW
    wait_for(lambda: farm.counts() == {"completed": n}, 60,
             what="every job completed")
    b.send_signal(signal.SIGTERM)
    assert b.wait(timeout=60 * SLOW) == 0
    # A's row and its share are gone
    assert farm.query("SELECT count(*) FROM provider_slots") == [(0,)]
    st = fake.stats()
    assert st["max_concurrency"] <= 2, st["max_concurrency"]
    assert st["concurrency_limited"] == 0


def sqlite_view_columns(farm, conf):
    """The processing_status columns a SQLite farm of the same config
    has (a scan of the same media into a database file of its own)."""
    ref = farm.path / "sqlite-ref"
    ref.mkdir()
    (ref / "mpfarm.conf").write_text(conf)
    env = dict(farm.env)
    env.pop("MPFARM_DB", None)
    p = subprocess.run([MPFARM_BIN, "scan", str(farm.media)], cwd=ref,
                       env=env, capture_output=True, timeout=60 * SLOW)
    assert p.returncode == 0, p.stderr
    con = sqlite3.connect(str(ref / "media_tracking.db"))
    try:
        return [r[1] for r in con.execute(
            "PRAGMA table_info(processing_status)")]
    finally:
        con.close()


def test_mixed_faults_across_hosts(farm, fake):
    """Three hosts against one fake provider answering with every
    transient fault at random (500, 429 with and without Retry-After,
    malformed and truncated bodies, slow answers), one host killed whole
    (master and workers) mid-run: every job completed exactly once, every
    output byte what the fake produced, and the view shaped as SQLite's."""
    conf = config(fake, langs="de,he",
                  extra="[farm]\nhost_timeout = 2\n").replace(
                      "max_attempts = 6\n", "max_attempts = 40\n")
    farm.write_config(conf)
    files = random_media(farm, 30)
    assert farm.run("scan", farm.media).returncode == 0
    fake.control(latency_ms=60, faults=MIXED_FAULTS)
    logs = [farm.path / ("m%d.log" % i) for i in range(3)]
    ms = [farm.start("run", log=lg) for lg in logs]
    # the first host dies whole once it holds work
    wait_for(lambda: farm.scalar(
        "SELECT count(*) FROM jobs j JOIN hosts h ON h.host_id = "
        "j.owner_host WHERE j.status = 'in-progress' AND h.pid = ?",
        (ms[0].pid,)) > 0, 60, what="host 0 holding jobs")
    os.killpg(ms[0].pid, signal.SIGKILL)
    ms[0].wait(timeout=10)
    for m in ms[1:]:
        assert m.wait(timeout=240 * SLOW) == 0
    assert farm.status_counts() == {"completed": 30}
    for lang in ("de", "he"):
        assert farm.status_counts("translate", lang) == {"completed": 30}
    for name, data in files.items():
        text = fake_provider.expected_transcript(name, data)
        assert transcript(farm, name) == text + "\n"
        assert translation(farm, "de", name) == "[DE] " + text + "\n"
        assert translation(farm, "he", name) == "[HE] " + text + "\n"
    twice = farm.query("SELECT job_id, count(*) FROM attempts WHERE "
                       "outcome = 'completed' GROUP BY job_id "
                       "HAVING count(*) <> 1")
    assert twice == [], twice
    assert farm.scalar("SELECT count(*) FROM attempts WHERE outcome = "
                       "'completed'") == 90
    st = fake.stats()
    assert st["by_status"].get("500", 0) > 0
    assert st["by_status"].get("429", 0) > 0
    # the view: the same columns as a SQLite farm's, every value one of
    # the four statuses
    cols = [r[0] for r in farm.query(
        "SELECT column_name FROM information_schema.columns WHERE "
        "table_schema = current_schema() AND table_name = "
        "'processing_status' ORDER BY ordinal_position")]
    assert cols == sqlite_view_columns(farm, conf)
    rows = farm.query("SELECT status, transcription_status, "
                      "translation_de_status, translation_he_status "
                      "FROM processing_status")
    assert len(rows) == 30 and {v for r in rows for v in r} == {"completed"}
