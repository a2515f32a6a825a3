"""The cloud providers (ElevenLabs, OpenAI, DeepL) through the real binary,
against tests/fake_provider.py on 127.0.0.1: exact outputs, the error
classes (transient errors retried, permanent ones failing at once with the
provider's message), Retry-After, hangs, files refused before any upload,
keys that never leak, DeepL chunking, and the farm-wide concurrency limit.
No test touches the internet."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import SLOW, wait_for

REPO = pathlib.Path(__file__).resolve().parents[2]
FAKE = REPO / "tests" / "fake_provider.py"
_spec = importlib.util.spec_from_file_location("fake_provider", FAKE)
fake_provider = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_provider)

KEYS = fake_provider.DEFAULT_KEYS
ENV = {"ELEVENLABS_API_KEY": KEYS["elevenlabs"],
       "OPENAI_API_KEY": KEYS["openai"],
       "DEEPL_AUTH_KEY": KEYS["deepl"]}


class Fake:
    """A fake_provider.py process of this test's own (killed at teardown;
    it also exits by itself after --max-seconds)."""

    def __init__(self, tmp_path):
        port_file = tmp_path / "fake.port"
        self.log = open(tmp_path / "fake.err", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(FAKE), "--port-file", str(port_file),
             "--max-seconds", str(300 * SLOW)],
            stdout=subprocess.DEVNULL, stderr=self.log)
        wait_for(port_file.exists, timeout=15)
        self.port = int(port_file.read_text())
        self.url = "http://127.0.0.1:%d" % self.port

    def post(self, path, obj):
        req = urllib.request.Request(self.url + path,
                                     data=json.dumps(obj).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def control(self, **kw):
        return self.post("/_control", kw)

    def stats(self):
        with urllib.request.urlopen(self.url + "/_stats", timeout=10) as r:
            return json.loads(r.read())

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def fake(tmp_path):
    f = Fake(tmp_path)
    yield f
    f.stop()


def config(fake, transcribe="elevenlabs", translate="deepl", langs="de",
           extra=""):
    return """
[farm]
workers = 2
max_attempts = 6
retry_delay_ms = 50
retry_max_delay_ms = 2000
[transcribe]
provider = %s
[translate]
provider = %s
languages = %s
[elevenlabs]
base_url = %s
low_speed_time = 2
[openai]
base_url = %s
low_speed_time = 2
[deepl]
base_url = %s
low_speed_time = 2
%s
""" % (transcribe, translate, langs, fake.url, fake.url, fake.url, extra)


def media(farm, name, data):
    p = farm.media / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


# Every transient fault at once, each request drawing at random: what
# the chaos tests run against.
MIXED_FAULTS = [
    {"kind": "status", "status": 500, "count": -1, "probability": 0.12},
    {"kind": "status", "status": 429, "count": -1, "probability": 0.08,
     "retry_after": "0"},
    {"kind": "status", "status": 429, "count": -1, "probability": 0.05},
    {"kind": "malformed", "count": -1, "probability": 0.05},
    {"kind": "truncated", "count": -1, "probability": 0.05},
]


def random_media(farm, n, size=64):
    """n recordings recNN.wav of random bytes: {name: data}."""
    files = {}
    for i in range(n):
        data = b"audio-%d-" % i + os.urandom(size)
        name = "rec%02d.wav" % i
        media(farm, name, data)
        files[name] = data
    return files


def transcript(farm, rel, suffix=".txt"):
    return (farm.output / "transcripts" / (rel + suffix)).read_text()


def translation(farm, lang, rel):
    return (farm.output / "translations" / lang / (rel + ".txt")).read_text()


def run(farm, *args, env=ENV, timeout=60):
    return farm.run("run", *args, env=env, timeout=timeout)


def assert_no_key_anywhere(farm, *texts):
    """No key in any output, the database or the given logs."""
    blobs = [t.encode() if isinstance(t, str) else t for t in texts]
    blobs += ["\n".join(farm.dump()).encode()]
    for p in farm.output.rglob("*"):
        if p.is_file():
            blobs.append(p.read_bytes())
    for key in KEYS.values():
        for b in blobs:
            assert key.encode() not in b


def last_errors(farm, stage="transcribe"):
    return [r[0] for r in farm.query(
        "SELECT last_error FROM jobs WHERE stage = ? AND status = 'failed' "
        "ORDER BY job_id", (stage,))]


def test_pipeline_exact_outputs(farm, fake):
    farm.write_config(config(fake, langs="en,de,he",
                             extra="[translate.he]\nprovider = openai\n"))
    say = b"SAY: Hello there. This is the first recording."
    raw = b"\x00\x01binary audio \xff"
    media(farm, "a.mp3", say)
    media(farm, "sub/b c.wav", raw)
    farm.scan()
    p = run(farm)
    assert p.returncode == 0, p.stderr
    text_a = fake_provider.expected_transcript("a.mp3", say)
    # the upload is named after a tamed copy of the base name
    text_b = fake_provider.expected_transcript("b_c.wav", raw)
    assert transcript(farm, "a.mp3") == text_a + "\n"
    assert transcript(farm, "sub/b c.wav") == text_b + "\n"
    doc = json.loads(transcript(farm, "a.mp3", ".json"))
    assert doc["text"] == text_a
    assert [w["text"] for w in doc["words"] if w["type"] == "word"][:2] == \
        ["Hello", "there."]
    srt = transcript(farm, "a.mp3", ".srt")
    assert srt.startswith("1\n00:00:00,000 --> ")
    assert "Hello there.\n\n2\n" in srt
    assert transcript(farm, "a.mp3", ".vtt").startswith("WEBVTT\n\n00:00:00.000")
    for rel, text in (("a.mp3", text_a), ("sub/b c.wav", text_b)):
        assert translation(farm, "de", rel) == "[DE] " + text + "\n"
        assert translation(farm, "en", rel) == "[EN-US] " + text + "\n"
        assert translation(farm, "he", rel) == "[HE] " + text + "\n"
    st = fake.stats()
    assert st["bad_keys"] == 0
    chats = [e for e in st["log"] if e["path"] == "/v1/chat/completions"]
    assert chats and all(e["model"] == "gpt-4o-mini" and
                         e["temperature"] == 0 for e in chats)
    stt = [e for e in st["log"] if e["path"] == "/v1/speech-to-text"]
    assert all(e["model"] == "scribe_v1" for e in stt)
    assert_no_key_anywhere(farm, p.stderr, p.stdout)


def test_openai_transcription_and_models(farm, fake):
    farm.write_config(config(fake, transcribe="openai", translate="openai",
                             extra="[translate.de]\nmodel = gpt-4o\n"))
    say = b"SAY: One sentence here. And a second one, longer than the first."
    media(farm, "talk.m4a", say)
    farm.scan()
    p = run(farm)
    assert p.returncode == 0, p.stderr
    text = fake_provider.expected_transcript("talk.m4a", say)
    assert transcript(farm, "talk.m4a") == text + "\n"
    assert json.loads(transcript(farm, "talk.m4a", ".json"))["segments"]
    srt = transcript(farm, "talk.m4a", ".srt")
    assert "One sentence here.\n\n2\n" in srt
    assert translation(farm, "de", "talk.m4a") == "[DE] " + text + "\n"
    log = fake.stats()["log"]
    stt = [e for e in log if e["path"] == "/v1/audio/transcriptions"]
    assert stt[0]["model"] == "whisper-1"
    assert stt[0]["format"] == "verbose_json"
    chat = [e for e in log if e["path"] == "/v1/chat/completions"]
    assert chat[0]["model"] == "gpt-4o"


def test_transient_errors_are_retried(farm, fake):
    farm.write_config(config(fake))
    for i in range(3):
        media(farm, "f%d.mp3" % i, b"audio %d" % i)
    farm.scan()
    fake.control(faults=[
        {"kind": "status", "status": 500, "count": 1},
        {"kind": "status", "status": 503, "count": 1},
        {"kind": "malformed", "count": 1},
        {"kind": "truncated", "count": 1},
        {"kind": "partial", "count": 1},
        {"kind": "close", "count": 1},
        {"kind": "status", "status": 529, "count": 1, "provider": "deepl"},
    ])
    p = run(farm)
    assert p.returncode == 0, p.stderr
    assert farm.status_counts() == {"completed": 3}
    assert farm.status_counts("translate", "de") == {"completed": 3}
    st = fake.stats()
    assert st["faults_fired"] == 7
    assert all(f["count"] == 0 for f in st["faults"])
    outcomes = {r[0] for r in farm.query("SELECT outcome FROM attempts")}
    assert {"transient", "completed"} <= outcomes
    msgs = " ".join(r[0] or "" for r in farm.query(
        "SELECT message FROM attempts WHERE outcome = 'transient'"))
    assert "malformed response from" in msgs
    assert "HTTP 500 from" in msgs


def test_retry_after_is_honoured(farm, fake):
    farm.write_config(config(fake))
    media(farm, "a.mp3", b"audio")
    farm.scan()
    fake.control(faults=[{"kind": "status", "status": 429, "count": 1,
                          "retry_after": "2", "path": "/v1/speech-to-text"}])
    t0 = time.monotonic()
    p = run(farm)
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    assert took >= 1.9
    # a rate-limited attempt is given back: the job used one attempt
    assert farm.scalar("SELECT attempts FROM jobs WHERE stage = "
                       "'transcribe'") == 1
    rows = farm.query("SELECT outcome, http_status FROM attempts a JOIN jobs "
                      "j USING (job_id) WHERE j.stage = 'transcribe' ORDER "
                      "BY attempt_id")
    assert rows[0] == ("rate_limited", 429)
    assert rows[-1][0] == "completed"


def test_hung_request_times_out_and_retries(farm, fake):
    farm.write_config(config(fake, extra="[farm]\njob_timeout = 120\n"))
    media(farm, "a.mp3", b"audio")
    farm.scan()
    fake.control(faults=[{"kind": "hang", "seconds": 60, "count": 1,
                          "provider": "deepl"}])
    p = run(farm, timeout=90)
    assert p.returncode == 0, p.stderr
    msg = farm.scalar("SELECT message FROM attempts WHERE outcome = "
                      "'transient'")
    assert "request to deepl failed" in msg and "too slow" in msg


def test_permanent_errors_fail_at_once(farm, fake):
    farm.write_config(config(fake, langs="de,he",
                             extra="[translate.he]\nprovider = openai\n"))
    media(farm, "a.mp3", b"audio")
    farm.scan()
    fake.control(keys={"openai": "sk-another-key-entirely"},
                 faults=[{"kind": "quota", "provider": "deepl", "count": -1}])
    p = run(farm, env=dict(ENV))
    assert p.returncode == 3, p.stderr
    de = farm.scalar("SELECT last_error FROM jobs WHERE lang = 'de'")
    he = farm.scalar("SELECT last_error FROM jobs WHERE lang = 'he'")
    assert "HTTP 456 from deepl: Quota exceeded" in de
    assert "HTTP 401 from openai" in he and "Incorrect API key" in he
    assert farm.scalar("SELECT attempts FROM jobs WHERE lang = 'de'") == 1
    assert farm.scalar("SELECT attempts FROM jobs WHERE lang = 'he'") == 1
    assert_no_key_anywhere(farm, p.stderr, p.stdout)


def test_missing_key_is_a_config_error(farm, fake):
    farm.write_config(config(fake, transcribe="openai"))
    media(farm, "a.mp3", b"audio")
    farm.scan()
    env = {k: v for k, v in ENV.items() if k != "OPENAI_API_KEY"}
    p = run(farm, env=env)
    assert p.returncode == 2
    assert "OPENAI_API_KEY is not set (or [openai] api_key_file)" in p.stderr
    assert fake.stats()["requests"] == 0
    assert farm.status_counts() == {"not_started": 1}


def test_key_file(farm, fake, tmp_path):
    key = tmp_path / "deepl.key"
    key.write_text("  " + KEYS["deepl"] + "\n\n")
    key.chmod(0o644)
    farm.write_config(config(fake, transcribe="noop") +
                      "[deepl]\napi_key_file = %s\n" % key)
    media(farm, "a.mp3", b"audio")
    farm.scan()
    env = {k: v for k, v in ENV.items() if k != "DEEPL_AUTH_KEY"}
    p = run(farm, env=env)
    assert p.returncode == 2
    assert str(key) in p.stderr and "world-readable" in p.stderr
    assert KEYS["deepl"] not in p.stderr
    key.chmod(0o600)
    p = run(farm, env=env)
    assert p.returncode == 0, p.stderr
    assert translation(farm, "de", "a.mp3").startswith("[DE] noop transcript")


def test_bad_files_fail_before_upload(farm, fake):
    farm.write_config(config(fake, transcribe="openai"))
    media(farm, "empty.mp3", b"")
    gone = media(farm, "gone.mp3", b"audio")
    big = farm.media / "big.wav"
    with open(big, "wb") as f:
        f.truncate(25 * 1024 * 1024 + 1)       # sparse: no disk used
    farm.scan()
    gone.unlink()
    p = run(farm)
    assert p.returncode == 3
    # rel_path is a BLOB (bytea on PostgreSQL): decoded here, not by CAST
    errs = {bytes(rel).decode(): err for rel, err in farm.query(
        "SELECT f.rel_path, j.last_error FROM jobs j JOIN "
        "media_files f USING (file_id) WHERE j.stage = 'transcribe'")}
    assert len(errs) == 3
    assert "empty file" in errs["empty.mp3"]
    assert str(gone) in errs["gone.mp3"]
    assert "26214401 bytes" in errs["big.wav"] and "25 MB" in errs["big.wav"]
    assert fake.stats()["requests"] == 0
    assert farm.scalar("SELECT MAX(attempts) FROM jobs WHERE stage = "
                       "'transcribe'") == 1


def test_deepl_long_transcript_is_chunked(farm, fake):
    farm.write_config(config(fake))
    paras = []
    for p in range(120):
        paras.append(" ".join("Sentence %d of paragraph %d, with \"quotes\" "
                              "and \u00fcml\u00e4ute \u05e9\u05dc\u05d5\u05dd."
                              % (s, p) for s in range(40)))
    say = ("SAY: " + "\n\n".join(paras)).encode()
    assert len(say) > 300 * 1024
    media(farm, "long.mp3", say)
    farm.scan()
    p = run(farm)
    assert p.returncode == 0, p.stderr
    src = transcript(farm, "long.mp3")
    out = translation(farm, "de", "long.mp3")
    assert out.replace("[DE] ", "") == src
    st = fake.stats()
    calls = [e for e in st["log"] if e["path"] == "/v2/translate"]
    assert len(calls) >= 3
    assert max(e["bytes"] for e in calls) < 128 * 1024
    assert max(e["texts"] for e in calls) <= 50


def test_farm_wide_concurrency_limit(farm, fake):
    farm.write_config(config(fake, transcribe="elevenlabs", translate="noop",
                             extra="[elevenlabs]\nmax_concurrency = 2\n")
                      .replace("workers = 2", "workers = 6"))
    for i in range(10):
        media(farm, "f%02d.mp3" % i, b"audio %d" % i)
    farm.scan()
    fake.control(latency_ms=300)
    p = run(farm)
    assert p.returncode == 0, p.stderr
    st = fake.stats()
    assert st["by_path"]["/v1/speech-to-text"] == {"200": 10}
    assert st["max_concurrency"] <= 2


def test_rate_limits_and_busy_provider_do_not_fail_jobs(farm, fake):
    farm.write_config(config(fake, transcribe="elevenlabs", translate="noop")
                      .replace("workers = 2", "workers = 4"))
    for i in range(8):
        media(farm, "f%02d.mp3" % i, b"audio %d" % i)
    farm.scan()
    fake.control(rate={"rps": 8, "burst": 2, "retry_after": True},
                 faults=[{"kind": "concurrency", "count": 2}])
    p = run(farm)
    assert p.returncode == 0, p.stderr
    assert farm.status_counts() == {"completed": 8}
    st = fake.stats()
    assert st["by_status"].get("429", 0) >= 2
    # a 429 never costs an attempt
    assert farm.scalar("SELECT MAX(attempts) FROM jobs") == 1


def test_keepalive_reuses_connections(farm, fake):
    farm.write_config(config(fake, transcribe="elevenlabs", translate="deepl")
                      .replace("workers = 2", "workers = 1"))
    for i in range(5):
        media(farm, "f%d.mp3" % i, b"audio %d" % i)
    farm.scan()
    p = run(farm)
    assert p.returncode == 0, p.stderr
    st = fake.stats()
    assert st["requests"] == 10
    # one worker, one easy handle: far fewer connections than requests
    assert st["connections"] <= 3
