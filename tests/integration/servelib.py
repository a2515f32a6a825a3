"""Helpers for the tests of `mpfarm failed`, `show` and `serve`: a database
filled by a real run against tests/fake_provider.py with some failures,
and a running `mpfarm serve` on a free loopback port."""
import http.client
import json
import re

import pytest

from conftest import SLOW, wait_for
from test_providers import KEYS, Fake  # noqa: F401  (one fake server)

ENV = {"ELEVENLABS_API_KEY": KEYS["elevenlabs"],
       "DEEPL_AUTH_KEY": KEYS["deepl"]}

HOSTILE = "<script>alert(1)</script>.mp3"
NAMES = ["talks/a1.mp3", "talks/a2.mp3", "talks/b1.wav", "c1.mp3",
         "c2.mp3", HOSTILE]
# the fake answers 400 (a permanent error) to the first transcriptions
FAILED_TRANSCRIPTS = 2


@pytest.fixture
def fake(tmp_path):
    f = Fake(tmp_path)
    yield f
    f.stop()


@pytest.fixture
def filled(farm, fake):
    """farm after fill()."""
    fill(farm, fake)
    return farm


def config(fake, extra=""):
    return """
[farm]
workers = 1
max_attempts = 2
retry_delay_ms = 50
retry_max_delay_ms = 1000
[transcribe]
provider = elevenlabs
[translate]
provider = deepl
languages = de,fr
[elevenlabs]
base_url = %s
max_concurrency = 2
[deepl]
base_url = %s
%s
""" % (fake.url, fake.url, extra)


def fill(farm, fake):
    """Scan NAMES and run the farm once; FAILED_TRANSCRIPTS transcriptions
    fail at once (HTTP 400), so their translations never start."""
    farm.write_config(config(fake))
    for n in NAMES:
        p = farm.media / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"SAY: hello from " + n.encode())
    farm.scan()
    fake.control(faults=[{"kind": "status", "status": 400,
                          "count": FAILED_TRANSCRIPTS,
                          "provider": "elevenlabs",
                          "message": "Unsupported audio format"}])
    p = farm.run("run", env=ENV, timeout=90)
    assert p.returncode == 3, p.stderr      # some jobs failed
    assert farm.scalar("SELECT count(*) FROM jobs WHERE status = 'failed'") \
        == FAILED_TRANSCRIPTS
    return p


class Serve:
    """`mpfarm serve` on a free port; .get() speaks raw HTTP so hostile
    paths reach the server exactly as written."""

    def __init__(self, farm, *args):
        self.proc = farm.popen("serve", "--listen", "127.0.0.1:0", *args)
        err = self.proc.log_err

        def port():
            m = re.search(r"event=serve_start .*port=(\d+)",
                          err.read_text(errors="replace")
                          if err.exists() else "")
            return int(m.group(1)) if m else None
        self.port = wait_for(port, timeout=15)
        self.url = "http://127.0.0.1:%d" % self.port

    def get(self, path, method="GET", body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port,
                                       timeout=30 * SLOW)
        try:
            c.putrequest(method, path, skip_accept_encoding=True)
            for k, v in (headers or {}).items():
                c.putheader(k, v)
            if body is not None:
                c.putheader("Content-Length", str(len(body)))
            c.endheaders(body)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def json(self, path):
        st, h, b = self.get(path)
        assert st == 200, (st, b)
        assert h["Content-Type"] == "application/json"
        return json.loads(b)

    def text(self, path):
        st, h, b = self.get(path)
        assert st == 200, (st, b)
        return b.decode("utf-8")

    def stop(self, farm):
        self.proc.terminate()
        assert farm.wait(self.proc, timeout=15) == 0
