#!/usr/bin/env python3
"""make_corpus.py - writes the seed corpus of the fuzz targets into
tests/fuzz/corpus/<target>/: real answers of each provider (the shapes
tests/fake_provider.py sends and the APIs document), error bodies, header
values, configs, commands and texts, plus the hostile inputs of the
security review (a {"words":[{},{},...]} body, the 11-byte IPC payload that
claimed 2^32 elements, a refusal carrying a key and control bytes, a text
ending in a long run of whitespace).  Files are named by content hash, so
running it again changes nothing; inputs libFuzzer finds can be added to
the same folders by hand (or with -merge=1)."""
import hashlib
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import fake_provider  # noqa: E402  (for expected_transcript/word_timings)


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def mp_int(v):
    if 0 <= v < 128:
        return bytes([v])
    if -32 <= v < 0:
        return struct.pack("b", v)
    return b"\xd3" + struct.pack(">q", v)


def mp_str(s):
    b = s.encode()
    if len(b) < 32:
        return bytes([0xa0 | len(b)]) + b
    return b"\xd9" + bytes([len(b)]) + b if len(b) < 256 else \
        b"\xda" + struct.pack(">H", len(b)) + b


def frame(*fields):
    body = bytes([0x90 | len(fields)])
    for f in fields:
        body += mp_str(f) if isinstance(f, str) else mp_int(f)
    return struct.pack(">I", len(body)) + body


def ipc():
    # layouts: ipc/ipc_frame.h (IPC_<TYPE>_FIELDS); providers are indexes
    frames = [frame(1, 4242), frame(2, 17, 4, 0), frame(2, 18, 1, 3),
              frame(4, 17), frame(5), frame(6, 1), frame(7, 2),
              frame(3, 17, 4, 0, 2, 0, 0, ""),
              frame(3, 19, 4, -1, 0, 0, 0, ""),
              frame(3, 1 << 40, 1, 3, 4, 429, 1500,
                    "HTTP 429 from openai: Rate limit reached"),
              frame(8, 1, 1, 2000, 429, "pause"),
              # out of range: a provider index, an http status, a kind
              frame(2, 17, 32, 0), frame(3, 17, 0, 0, 2, 1000, 0, ""),
              frame(8, 1, 9, 0, 0, "")]
    for f in frames:
        put("ipc_frame", f)
    put("ipc_frame", b"".join(frames))
    # the finding: 11 bytes claiming an array of 2^32 elements
    put("ipc_frame", struct.pack(">I", 11) +
        b"\x92\x04\xdd\xff\xff\xff\xff\x00\x00\x00\x00")
    put("ipc_frame", b"\x92\x04\xdf\xff\xff\xff\xff\x00\x00\x00\x00")
    put("ipc_frame", struct.pack(">I", 7) + b"\xdd\xff\xff\xff\xff\x04\x01")
    put("ipc_frame", struct.pack(">I", 0xffffffff) + b"\x92\x04\x01")
    put("ipc_frame", struct.pack(">I", 8) + b"\x93\x06\xdb\xff\xff\xff\xff\x41")


def words_el(text):
    words = []
    for i, (w, s, e) in enumerate(fake_provider.word_timings(text)):
        if i:
            words.append({"text": " ", "start": words[-1]["end"], "end": s,
                          "type": "spacing", "logprob": 0.0})
        words.append({"text": w, "start": s, "end": e, "type": "word",
                      "logprob": 0.0, "speaker_id": "speaker_0"})
    return words


TEXT = "Hello there. This is the first recording, with (laughter) in it."


def providers():
    put("transcript", json.dumps({"language_code": "eng",
                                  "language_probability": 0.99,
                                  "text": TEXT, "words": words_el(TEXT)}))
    put("transcript", json.dumps({"text": "", "words": []}))
    put("transcript", json.dumps({"text": "(music)", "words": [
        {"text": "(music)", "start": 0.0, "end": 3.5, "type": "audio_event"}]}))
    put("transcript", '{"text": "x", "words": [' + "{}," * 2000 + "{}]}")
    put("transcript", '{"text": "x", "words": ' + "[" * 3000 + "]" * 3000 + "}")
    put("transcript", '{"text": "a", "text": "b"}')
    put("transcript", '{"text": "x\\u0000y", "words": [{"text": 5}]}')
    segs = [{"id": 0, "seek": 0, "start": 0.0, "end": 2.5,
             "text": " Hello there.", "tokens": [50364, 2425, 456, 13],
             "temperature": 0.0, "avg_logprob": -0.2,
             "compression_ratio": 1.0, "no_speech_prob": 0.01},
            {"id": 1, "seek": 0, "start": 2.5, "end": 9.0,
             "text": " This is the first recording.", "tokens": [],
             "temperature": 0.0, "avg_logprob": -0.2,
             "compression_ratio": 1.0, "no_speech_prob": 0.01}]
    put("transcript", json.dumps({"task": "transcribe",
        "language": "english", "duration": 9.0, "text": TEXT,
        "segments": segs}))
    put("transcript", json.dumps({"text": TEXT, "words": [
        {"word": "Hello", "start": 0.0, "end": 0.4},
        {"word": "there", "start": 0.4, "end": 0.9}]}))
    put("transcript", json.dumps({"text": TEXT}))
    put("transcript", '{"text": "x", "segments": [' + "{}," * 2000 +
        '{"text": " a", "start": 1e308, "end": -1}]}')
    chat = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [
        {"index": 0, "finish_reason": "stop",
         "message": {"role": "assistant", "content": "[DE] Hallo"}}]}
    put("openai_chat", json.dumps(chat))
    chat["choices"][0]["finish_reason"] = "length"
    put("openai_chat", json.dumps(chat))
    put("openai_chat", json.dumps({"choices": [{"index": 0, "message": {
        "role": "assistant", "content": None,
        "refusal": "I can\u2019t\x1b[31m help\r\nwith that: "
                   "sk-fuzz-0123456789abcdef \u0085 \xff"}}]}))
    put("openai_chat", '{"choices": []}')
    put("deepl", b"\x02" + json.dumps({"translations": [
        {"detected_source_language": "EN", "text": "[DE] Hallo"},
        {"detected_source_language": "EN", "text": "[DE] Welt"}]}).encode())
    put("deepl", b"\x01" + b'{"translations": [{"text": 1}]}')
    put("deepl", b"\x00" + b'{"translations": []}')


def errors():
    for prov, st in (("openai", 429), ("openai", 401), ("elevenlabs", 422),
                     ("elevenlabs", 429), ("deepl", 456), ("deepl", 403)):
        put("http_error", json.dumps(fake_provider.error_body(prov, st)))
    put("http_error", json.dumps({"error": {"message": "You exceeded your "
        "current quota", "type": "insufficient_quota", "code": None}}))
    put("http_error", json.dumps({"detail": [{"loc": ["body", "file"],
        "msg": "field required", "type": "value_error.missing"}]}))
    put("http_error", "<html><body>502 Bad Gateway\r\n\x1b[0m</body></html>")
    put("http_error", b'{"message": "bad key sk-fuzz-0123456789abcdef \xc3"}')
    for v in ("120", " 0 ", "1.5", "-3", "nan", "inf", "1e400",
              "Wed, 21 Oct 2015 07:28:00 GMT", "Sun, 06 Nov 1994 08:49:37 GMT",
              "6m0s", "20ms", "1h2m3.5s", "1.5s", "", "99999999999999999999"):
        put("retry_after", v)


def configs():
    for name in ("mpfarm.conf.example", "demo.conf"):
        with open(os.path.join(HERE, "..", "..", "etc", name), "rb") as f:
            put("config", f.read())
    put("config", "[transcribe]\nprovider = noop\n[translate]\n"
        "provider = noop\nlanguages = en\n")
    # the review's values that passed the check but broke the run
    put("config", "[farm]\nworkers = 2\n[openai]\nrate = inf\n"
        "max_concurrency = 4294967295\n")
    put("config", "[openai]\nmax_concurrency = 2.5\nmodel = \xff\xfe\n"
        "[translate]\nlanguages = --verbose\n".encode("latin-1"))
    put("config", "[translate.de]\nprovider = deepl\n[deepl]\n"
        "max_response_bytes = 99999999999999\nbase_url = ftp://x\n")
    put("config", "[" * 300 + "\nkey\n=\n" + "a" * 5000 + " = b\n")
    for c in ("pocketsphinx_continuous -infile {input} -logfn /dev/null",
              "apertium eng-spa", "sh -c 'echo \"{input}\" {lang}'",
              "a\\ b 'c d' \"e\\\"f\" {input}{lang}{input}",
              "unbalanced 'quote", "\"", "\\", "{", "{input", "   "):
        put("exec_split", c)


def texts():
    base = ("One two three. Four five six.\n\nSeven eight. "
            "\u3053\u3093\u306b\u3061\u306f\u3002\u4e16\u754c\uff01 "
            "\"Quoted.\" (Aside.) End").encode()
    for m in (4, 10, 40, 1000):
        put("split", struct.pack(">H", m) + base)
    put("split", struct.pack(">H", 64) + b"word " * 200 + b" " * 20000)
    put("split", struct.pack(">H", 64) + b"Hi." + b'"' * 20000 + b" end")
    put("split", struct.pack(">H", 16) + b"\xff\xfe\x80" * 100)
    put("split", struct.pack(">H", 3) + b"abc")


ipc()
providers()
errors()
configs()
texts()
