"""The worker-side findings of the security review, through the real
binary against tests/fake_provider.py:

- a hostile translation provider (OpenAI chat answers or DeepL batches of
  15 MB each, every one within max_response_bytes) fails its job
  permanently once the translation would pass max(max_response_bytes,
  16 x the transcript), after no more requests than that takes, while the
  worker's peak memory stays a small multiple of the cap and the next
  job is translated as usual (they used to complete with 150 MB outputs
  and a 200 MB worker);
- one OpenAI segment of 2 000 000 words ("a a a ...", 4 MB) fails its
  transcription permanently, bounded (it used to peak at 123 MB);
- an exec translation command using {input} is refused before any job
  runs (exit 2, nothing changed); one reading stdin works.
"""
import json

import pytest

from conftest import SANITIZED
from test_http_bounds import run_sampling
from test_providers import ENV, config, fake, media

__all__ = ["fake"]   # the fixture, imported for pytest

CAP = 16 * 1024 * 1024          # max_response_bytes' default
TOO_LARGE = "translation larger than %d bytes" % CAP


def paragraphs(n, size):
    """n paragraphs of exactly size bytes (plain words, a full stop),
    separated by blank lines: the splitter cuts at each break."""
    para = ("word " * size)[:size - 1] + "."
    return "\n\n".join([para] * n)


def translate_farm(farm, fake, provider, text):
    """One recording transcribed (by the fake ElevenLabs) into text, with
    translation jobs into de and fr by provider, pending."""
    farm.write_config(config(fake, transcribe="elevenlabs",
                             translate=provider, langs="de, fr",
                             extra="[farm]\nmax_attempts = 3\n"))
    media(farm, "a.mp3", b"SAY: " + text.encode())
    farm.scan(check=True)
    p = farm.run("run", "--stage", "transcribe", env=ENV, timeout=60)
    assert p.returncode == 0, p.stderr
    assert farm.status_counts() == {"completed": 1}
    fake.control(reset_stats=True)


def translate_rows(farm):
    return farm.query("SELECT lang, status, attempts, last_error FROM jobs "
                      "WHERE stage = 'translate' ORDER BY lang")


def one_failed_one_done(farm):
    """The translation job that met the hostile answers failed once for
    good; the other completed with the provider's real answer.  Returns
    (failed lang, completed lang)."""
    rows = translate_rows(farm)
    failed = [r for r in rows if r[1] == "failed"]
    done = [r for r in rows if r[1] == "completed"]
    assert len(failed) == 1 and len(done) == 1, rows
    assert failed[0][2] == 1, rows                  # permanent: no retry
    assert TOO_LARGE in failed[0][3], rows
    assert not (farm.output / "translations" / failed[0][0] /
                "a.mp3.txt").exists()
    return failed[0][0], done[0][0]


def chat_answer(content):
    return ('{"choices": [{"index": 0, "finish_reason": "stop", "message": '
            '{"role": "assistant", "content": %s}}]}' % json.dumps(content))


def test_hostile_openai_translation_bounded(farm, fake):
    text = paragraphs(3, 10000)         # three chat requests per language
    translate_farm(farm, fake, "openai", text)
    big = 15 * 1000 * 1000              # each answer under the cap
    head, tail = chat_answer("X").split('"X"')
    # two hostile answers: the first fits, the second would pass 16 MiB;
    # the other language's job then gets real (slow) answers, so the
    # worker is still alive to be measured
    fake.control(latency_ms=700, faults=[{
        "kind": "body", "prefix": head + '"', "item": "x", "items": big,
        "suffix": '"' + tail, "count": 2, "path": "/v1/chat/completions"}])
    rc, err, peak = run_sampling(farm)
    assert rc == 3, err
    _, lang = one_failed_one_done(farm)
    out = (farm.output / "translations" / lang / "a.mp3.txt").read_text()
    para = text.split("\n\n")[0]
    assert out.rstrip("\n") == "\n\n".join(
        ["[%s] %s" % (lang.upper(), para)] * 3), out[:200]
    # 2 for the hostile job (not 3: it stopped at the one too many), 3
    # for the other
    assert sum(fake.stats()["by_path"]["/v1/chat/completions"].values()) == 5
    if not SANITIZED:
        # answer buffer + decoded answer + copy + translation so far,
        # each about 16 MiB (it was 200 MB for a 150 MB output)
        assert 0 < peak < 128 * 1024, peak


def deepl_answer(n, text):
    """A DeepL answer of n copies of text, as prefix + item * (n - 1) +
    suffix so the fake builds it from one copy."""
    t = json.dumps({"detected_source_language": "EN", "text": text})
    return {"prefix": '{"translations": [', "item": t + ",",
            "items": n - 1, "suffix": t + "]}"}


def test_hostile_deepl_translation_bounded(farm, fake):
    # nine pieces of 15000 bytes: a request of eight (120 KB of JSON under
    # DeepL's 128 KiB) and one of one
    text = paragraphs(9, 15000)
    translate_farm(farm, fake, "deepl", text)
    big = "y" * 1900000
    rules = [dict(deepl_answer(8, big), kind="body", count=1,
                  path="/v2/translate"),            # 15.2 MB: fits
             dict(deepl_answer(1, big), kind="body", count=1,
                  path="/v2/translate")]            # 17.1 MB in all
    fake.control(latency_ms=700, faults=rules)
    rc, err, peak = run_sampling(farm)
    assert rc == 3, err
    _, lang = one_failed_one_done(farm)
    out = (farm.output / "translations" / lang / "a.mp3.txt").read_text()
    para = text.split("\n\n")[0]
    target = lang.upper()
    assert out.rstrip("\n") == "\n\n".join(
        ["[%s] %s" % (target, para)] * 9), out[:200]
    st = fake.stats()
    assert sum(st["by_path"]["/v2/translate"].values()) == 4
    # the premise: the real job's requests carried 8 texts, then 1
    real = [e["texts"] for e in st["log"]
            if e["path"] == "/v2/translate" and "fault" not in e]
    assert real == [8, 1], real
    if not SANITIZED:
        assert 0 < peak < 128 * 1024, peak


def test_one_long_openai_segment_fails_bounded(farm, fake):
    farm.write_config(config(fake, transcribe="openai", translate="noop",
                             langs="en",
                             extra="[farm]\nmax_attempts = 3\n"))
    media(farm, "a.mp3", b"SAY: first")
    media(farm, "b.mp3", b"SAY: second. And more.")
    farm.scan(check=True)
    words = 2 * 1000 * 1000
    fake.control(latency_ms=1500, faults=[{
        "kind": "body", "count": 1, "path": "/v1/audio/transcriptions",
        "prefix": '{"text": "x", "segments": [{"id": 0, "start": 0.0, '
                  '"end": 1.0, "text": "', "item": "a ", "items": words,
                  "suffix": '"}]}'}])
    rc, err, peak = run_sampling(farm)
    assert rc == 3, err
    rows = farm.query("SELECT status, attempts, last_error FROM jobs WHERE "
                      "stage = 'transcribe' ORDER BY status")
    assert [r[0] for r in rows] == ["completed", "failed"], rows
    assert rows[1][1] == 1 and "words in its segments" in rows[1][2], rows
    # permanent: one request for it, one for the good file
    assert sum(fake.stats()["by_path"][
        "/v1/audio/transcriptions"].values()) == 2
    # the good file still gets its subtitles from its segments
    srt = list((farm.output / "transcripts").glob("*.srt"))
    assert len(srt) == 1 and "second." in srt[0].read_text()
    if not SANITIZED:
        # a 4 MB answer: it took 123 MB when each "a" became a word
        assert 0 < peak < 64 * 1024, peak


EXEC_CONF = """[transcribe]
provider = noop
[translate]
provider = exec
languages = de
[exec]
translate_command = %s
"""


@pytest.mark.parametrize("cmd", [
    "sh -c 'cat \"$1\"' engine {input}",
    "sh -c 'cat' --from={input}",
    "sh -c \"cat '{input}'\""])
def test_exec_translate_input_refused(farm, cmd):
    farm.write_config(EXEC_CONF % cmd)
    farm.make_tree(1)
    farm.scan(check=True)
    p = farm.run("run")
    assert p.returncode == 2, p.stderr
    assert "{input} is not available to a translation command" in p.stderr
    # refused before any job ran
    assert farm.status_counts() == {"not_started": 1}
    assert not farm.output.exists() or not any(farm.output.rglob("*.txt"))
    c = farm.run("config")
    assert c.returncode == 2, c.stdout + c.stderr
    assert "{input} is not available" in c.stdout + c.stderr


def test_exec_translate_reads_stdin(farm):
    farm.write_config(EXEC_CONF % "sh -c 'echo {lang}:; tr a-z A-Z'")
    farm.make_tree(1)
    farm.scan(check=True)
    p = farm.run("run")
    assert p.returncode == 0, p.stderr
    outs = list((farm.output / "translations" / "de").rglob("*.txt"))
    assert len(outs) == 1
    got = outs[0].read_text()
    assert got.startswith("de:\n") and got[4:].strip() and \
        got[4:] == got[4:].upper(), got
