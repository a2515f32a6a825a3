"""HUP with a different provider in the middle of a run: the master decides
each job's provider and sends it in the JOB frame with the config
generation, so a worker started under the old config runs only jobs
decided under it, is never handed a job decided under the new one, and is
replaced once idle.  Every job runs exactly once, never interrupted, and
each job's output was written by the provider its worker's config names."""
import re
import signal

from conftest import wait_for, SLOW

CONF = """
[farm]
workers = 2
retry_delay_ms = 50
retry_max_delay_ms = 200
heartbeat_timeout = 5
[transcribe]
provider = {provider}
[noop]
delay_ms = 150
[exec]
transcribe_command = sh -c 'sleep 0.1; echo exec transcript'
"""

NFILES = 24


def spawned_pids(log_text):
    return {int(p) for p in re.findall(r"event=worker_spawn slot=\d+ "
                                       r"worker_pid=(\d+)", log_text)}


def test_hup_switches_provider_between_jobs(farm):
    farm.write_config(CONF.format(provider="noop"))
    farm.make_media(NFILES)
    farm.run("scan", farm.media, check=True)
    m = farm.start("run")
    wait_for(lambda: farm.counts().get("completed", 0) >= 4, 30 * SLOW,
             what="some jobs done with noop")
    farm.write_config(CONF.format(provider="exec"))
    m.send_signal(signal.SIGHUP)
    wait_for(lambda: "event=config_reloaded" in farm.log(), 10 * SLOW,
             what="the reload")
    assert m.wait(timeout=120 * SLOW) == 0
    log = farm.log()
    before, after = log.split("event=config_reloaded", 1)
    old, new = spawned_pids(before), spawned_pids(after)
    assert len(old) == 2 and len(new) >= 2, (old, new)
    assert "config_gen=1" in after.splitlines()[0]
    # both old workers were replaced because of the config, between jobs
    assert len(re.findall(r"event=worker_recycle .*reason=config", after)) \
        == 2, after
    assert "event=job_failed" not in log
    assert "event=worker_broken" not in log

    # every job ran once, completed, by one worker
    assert farm.counts() == {"completed": NFILES}
    rows = farm.query("SELECT f.rel_path, a.worker_pid, a.outcome FROM attempts a "
                  "JOIN jobs j ON j.job_id = a.job_id JOIN media_files f "
                  "ON f.file_id = j.file_id")
    assert len(rows) == NFILES
    ran = {"noop": 0, "exec": 0}
    for rel, pid, outcome in rows:
        assert outcome == "completed"
        rel = rel.decode() if isinstance(rel, bytes) else rel
        text = (farm.output / "transcripts" /
                (rel + ".txt")).read_text()
        if pid in old:
            # a worker of the old config: only ever noop
            assert text.startswith("noop transcript of "), (rel, text)
            ran["noop"] += 1
        else:
            # a worker of the new config: only ever exec
            assert pid in new, (rel, pid)
            assert text == "exec transcript\n", (rel, text)
            ran["exec"] += 1
    assert ran["noop"] >= 4 and ran["exec"] >= 1, ran
