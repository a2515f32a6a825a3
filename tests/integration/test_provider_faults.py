"""The providers under stress: a run against the fake server injecting
every transient fault at once while workers are SIGKILLed must end with
every file completed and every output byte what the fake produced; a run
with a wrong key must end fast, every job failed, with one log line and the
key nowhere.  Reuses test_providers.py's fake-server fixture."""
import os
import random
import signal
import time

from conftest import SLOW, wait_for
from test_providers import (ENV, KEYS, MIXED_FAULTS, assert_no_key_anywhere,
                            config, fake, fake_provider, media,
                            random_media, transcript, translation)

__all__ = ["fake"]   # the fixture, imported for pytest


def worker_pids(master_pid):
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[1]) == master_pid and rest[0] != "Z":
            kids.append(int(d))
    return kids


def test_mixed_faults_and_killed_workers(farm, fake):
    farm.write_config(config(fake, langs="de", extra="[farm]\nworkers = 4\n"
                             "max_attempts = 40\n").replace(
                                 "max_attempts = 6\n", ""))
    files = random_media(farm, 40)
    farm.scan()
    fake.control(latency_ms=40, faults=MIXED_FAULTS)
    p = farm.popen("run", env=ENV)
    rng = random.Random(11)
    deadline = time.monotonic() + 3
    kills = 0
    while time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.3)
        kids = worker_pids(p.pid)
        if kids:
            try:
                os.kill(rng.choice(kids), signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
    assert p.wait(timeout=180 * SLOW) == 0
    assert kills > 0
    assert farm.status_counts() == {"completed": 40}
    assert farm.status_counts("translate", "de") == {"completed": 40}
    for name, data in files.items():
        text = fake_provider.expected_transcript(name, data)
        assert transcript(farm, name) == text + "\n"
        assert translation(farm, "de", name) == "[DE] " + text + "\n"
    # nothing completed twice, and the faults really happened
    assert farm.scalar("SELECT COUNT(*) FROM attempts WHERE outcome = "
                       "'completed'") == 80
    st = fake.stats()
    assert st["by_status"].get("500", 0) > 0
    assert st["by_status"].get("429", 0) > 0


def test_wrong_key_ends_fast_every_job_failed(farm, fake):
    farm.write_config(config(fake, langs="", extra="[farm]\nworkers = 4\n"))
    for i in range(30):
        media(farm, "f%02d.wav" % i, b"x%d" % i)
    farm.scan()
    env = dict(ENV, ELEVENLABS_API_KEY="sk_wrong_" + "Q7zR" * 6)
    t0 = time.monotonic()
    p = farm.run("run", env=env, timeout=60)
    took = time.monotonic() - t0
    assert p.returncode == 3, p.stderr
    assert took < 15 * SLOW
    assert farm.status_counts() == {"failed": 30}
    # the provider was stopped after the first rejections, not file by file
    assert fake.stats()["requests"] <= 4 + 1
    assert p.stderr.count("event=provider_disabled") == 1
    errs = {r[0] for r in farm.query("SELECT last_error FROM jobs")}
    assert all("401" in e for e in errs), errs
    assert_no_key_anywhere(farm, p.stderr, p.stdout)
    assert env["ELEVENLABS_API_KEY"] not in p.stderr
    assert env["ELEVENLABS_API_KEY"] not in "\n".join(farm.dump())


def test_disabled_provider_with_a_request_in_flight_ends(farm, fake):
    """One request is refused (401) while another hangs: the hung one's
    job comes back not_started after its timeout and must fail with the
    provider's reason, not keep the farm running for ever."""
    farm.write_config(config(fake, langs="", extra="[farm]\nworkers = 2\n"))
    for i in range(2):
        media(farm, "h%d.wav" % i, b"h%d" % i)
    farm.scan()
    fake.control(hang_seconds=30, faults=[
        {"kind": "status", "status": 401, "count": 1},
        {"kind": "hang", "count": 1}])
    p = farm.run("run", env=ENV, timeout=90)
    assert p.returncode == 3, p.stderr
    assert farm.status_counts() == {"failed": 2}
    assert p.stderr.count("event=provider_disabled") == 1


def test_paused_provider_does_not_starve_other_work(farm, fake):
    farm.write_config(config(fake, transcribe="noop", langs="de,en",
                             extra="[translate.en]\nprovider = noop\n"))
    for i in range(6):
        media(farm, "p%d.wav" % i, b"p%d" % i)
    farm.scan()
    fake.control(faults=[{"kind": "status", "status": 429, "count": -1,
                          "provider": "deepl", "retry_after": "30"}])
    p = farm.popen("run", env=ENV)
    try:
        wait_for(lambda: farm.status_counts("translate", "en") ==
                 {"completed": 6}, timeout=20)
        assert farm.status_counts("translate", "de").get("completed", 0) == 0
    finally:
        p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60 * SLOW) == 0
    assert "in-progress" not in farm.status_counts("translate", "de")
