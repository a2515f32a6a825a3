"""Answers from a hostile provider, through the real binary against
tests/fake_provider.py: a 24 MB {"words":[{},{},...]} body fails its job
permanently after one request while the worker's peak memory stays far
below what decoding it used to take (1.9 GB); a refusal carrying control
characters and the API key reaches neither the database nor the log
unclean; outputs get 0666 less the umask."""
import importlib.util
import json
import pathlib
import stat
import subprocess
import time

import pytest

from conftest import SANITIZED, SLOW
from test_providers import ENV, KEYS, config, fake, media

# the worker-memory sampling of `make bench`, reused
_spec = importlib.util.spec_from_file_location(
    "bench_upload", pathlib.Path(__file__).resolve().parents[2] / "bench" /
    "bench_upload.py")
bench_upload = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_upload)

__all__ = ["fake"]   # the fixture, imported for pytest

HOSTILE = {"kind": "body", "prefix": '{"text": "x", "words": [',
           "item": "{},", "items": 8 * 1000 * 1000, "suffix": "{}]}",
           "path": "/v1/speech-to-text"}


def run_sampling(farm, timeout=120):
    """Run the farm, sampling its workers' peak RSS until it ends; returns
    (exit code, stderr text, highest worker VmHWM in KiB)."""
    p = farm.popen("run", "--workers", "1", env=ENV)
    peak = 0
    deadline = time.monotonic() + timeout * SLOW
    while p.poll() is None and time.monotonic() < deadline:
        for k in bench_upload.children(p.pid):
            peak = max(peak, bench_upload.vmhwm_kib(k))
        time.sleep(0.02)
    rc = farm.wait(p, timeout=30)
    print("worker peak RSS %d KiB" % peak)
    return rc, p.log_err.read_text(errors="replace"), peak


def hostile_farm(farm, fake, extra=""):
    farm.write_config(config(fake, langs="", extra="[farm]\nmax_attempts = 3\n"
                             + extra))
    media(farm, "a.mp3", b"SAY: first")
    media(farm, "b.mp3", b"SAY: second")
    farm.scan(check=True)
    # the second file's answer comes late, so the worker that decoded the
    # hostile one is still alive to be measured
    fake.control(latency_ms=1500, faults=[dict(HOSTILE, count=1)])


def failed_errors(farm):
    return [r[0] for r in farm.query(
        "SELECT last_error FROM jobs WHERE stage = 'transcribe' AND "
        "status = 'failed'")]


@pytest.mark.parametrize("extra,why,peak_mib", [
    # curl stops at the Content-Length: nothing of it is read
    ("", "larger than 16777216 bytes", 96),
    # the cap raised past the body: the decoder's memory budget stops it;
    # body (24 MB, in a buffer of up to 32 MiB) + 16 x 24 MB of budget,
    # where decoding it whole took 1.9 GB
    ("[elevenlabs]\nmax_response_bytes = 33554432\n", "too large to decode",
     480)])
def test_hostile_words_body_fails_once_memory_bounded(farm, fake, extra, why,
                                                      peak_mib):
    hostile_farm(farm, fake, extra)
    rc, err, peak = run_sampling(farm)
    assert rc == 3, err
    errs = failed_errors(farm)
    assert len(errs) == 1 and why in errs[0], errs
    # permanent: one request for it, one for the good file
    assert sum(fake.stats()["by_path"]["/v1/speech-to-text"].values()) == 2
    assert farm.status_counts() == {"completed": 1, "failed": 1}
    if not SANITIZED:
        assert 0 < peak < peak_mib * 1024, peak


def test_refusal_is_cleaned_and_scrubbed(farm, fake):
    refusal = ("I can\u2019t help\x1b[31m with\r\nthat\x07 key=%s \u0085end"
               % KEYS["openai"])
    body = ('{"choices": [{"index": 0, "finish_reason": "stop", "message": '
            '{"role": "assistant", "content": null, "refusal": %s}}]}'
            % json.dumps(refusal))
    farm.write_config(config(fake, transcribe="noop", translate="openai",
                             langs="de"))
    media(farm, "a.mp3", b"SAY: hi")
    farm.scan(check=True)
    fake.control(faults=[{"kind": "body", "prefix": body, "count": -1,
                          "path": "/v1/chat/completions"}])
    p = farm.run("run", "--log-level", "debug", env=ENV, timeout=60)
    assert p.returncode == 3, p.stderr
    errs = [r[0] for r in farm.query(
        "SELECT last_error FROM jobs WHERE stage = 'translate' AND "
        "status = 'failed'")]
    assert len(errs) == 1
    e = errs[0]
    assert e.startswith("the model refused to translate: I can\u2019t help")
    assert "with that key=***" in e.replace("  ", " ")
    assert "***" in e
    assert not any(ord(ch) < 0x20 or 0x7f <= ord(ch) < 0xa0 for ch in e), e
    # a refusal is permanent: asked once
    assert sum(fake.stats()["by_path"]["/v1/chat/completions"].values()) == 1
    blob = "\n".join(farm.dump()) + p.stderr + p.stdout
    for key in KEYS.values():
        assert key not in blob
        assert key[:12] not in blob
    assert "\x1b" not in blob


@pytest.mark.parametrize("mask,mode", [(0o027, 0o640), (0o002, 0o664)])
def test_outputs_take_the_umask(farm, mask, mode):
    farm.write_config("[transcribe]\nprovider = noop\n[translate]\n"
                      "provider = noop\nlanguages = en\n")
    farm.make_tree(1)
    farm.scan(check=True)
    p = subprocess.run(["sh", "-c", "umask %o && exec \"$0\" run" % mask,
                        farm.bin], cwd=str(farm.path), env=farm.env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60 * SLOW)
    assert p.returncode == 0, p.stderr
    outs = [q for q in farm.output.rglob("*") if q.is_file()]
    assert len(outs) >= 3      # .txt and .json, and the translation
    for q in outs:
        assert stat.S_IMODE(q.stat().st_mode) == mode, q
