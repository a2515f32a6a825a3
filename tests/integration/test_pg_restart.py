"""The PostgreSQL server restarts in the middle of a run (PostgreSQL pass
only, MPFARM_TEST_STORE=pg): the master and its workers lose their
connections, reconnect with backoff and finish the run.  Every job ends
completed exactly once (one completed attempt each, one attempt counted),
none is left in-progress, and the outputs are byte-exact."""
import json
import pathlib

import pytest

import storelib
from conftest import wait_for, SLOW

pytestmark = pytest.mark.skipif(
    not storelib.PG, reason="PostgreSQL pass only (MPFARM_TEST_STORE=pg)")

CONF = """
[transcribe]
provider = noop
[farm]
retry_delay_ms = 50
retry_max_delay_ms = 200
heartbeat_timeout = 30
[noop]
delay_ms = {delay}
"""


def completed(farm):
    return farm.scalar("SELECT count(*) FROM jobs WHERE status = "
                       "'completed'")


def outputs(root):
    return {p.relative_to(root): p.read_bytes()
            for p in root.rglob("*") if p.is_file()}


# slow jobs: the restart finds the connections idle between jobs; fast
# jobs (several completed per transaction): it cuts transactions and
# COMMITs in flight, whose outcome the workers read back
@pytest.mark.parametrize("restarts,n,delay", [(1, 24, 400), (2, 24, 400),
                                              (2, 240, 5)])
def test_run_survives_server_restart(farm, restarts, n, delay):
    farm.write_config(CONF.format(delay=delay))
    farm.make_media(n)
    farm.scan(farm.media)
    m = farm.start("run", "--workers", "3")
    for k in range(restarts):
        want = (k + 1) * n // (restarts + 2)
        wait_for(lambda: completed(farm) >= want, 60,
                 what="jobs completing before the restart")
        storelib.pg_restart()
    assert m.wait(timeout=120 * SLOW) == 0, farm.log()[-3000:]
    assert dict(farm.query("SELECT status, count(*) FROM jobs GROUP BY 1")) \
        == {"completed": n}, farm.log()[-3000:]
    twice = farm.query("SELECT job_id, count(*) FROM attempts WHERE outcome "
                       "= 'completed' GROUP BY job_id HAVING count(*) <> 1")
    assert twice == [], twice
    # nothing was failed or re-run for the outage
    assert farm.query("SELECT job_id, attempts, last_error FROM jobs "
                      "WHERE attempts <> 1") == []
    assert farm.scalar("SELECT count(*) FROM attempts") == n
    # what the noop provider writes for each file, byte for byte: its
    # transcript names the input, its JSON the job that wrote it
    got = outputs(farm.output)
    ids = {}
    for i in range(n):
        name = "f%05d.wav" % i
        txt = got.pop(pathlib.Path("transcripts", name + ".txt"))
        assert txt == ("noop transcript of %s\n" % name).encode()
        js = got.pop(pathlib.Path("transcripts", name + ".json"))
        ids[json.loads(js)["job"]] = name
        assert js == b'{"provider":"noop","job":%d}\n' % \
            json.loads(js)["job"]
    assert got == {}, sorted(got)
    assert sorted(ids) == [r[0] for r in farm.query(
        "SELECT job_id FROM jobs ORDER BY job_id")]
    log = farm.log()
    assert "store_reconnected" in log, log[-3000:]
