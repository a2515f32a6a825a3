#!/usr/bin/env python3
"""fake_provider.py - a stand-in for the ElevenLabs, OpenAI and DeepL APIs.

It speaks their wire formats (paths, auth headers, multipart and JSON
bodies, success and error shapes) on 127.0.0.1 so the tests exercise the
real client code without the internet, and it can misbehave on demand:
errors for the next N requests or at random, 429 with or without
Retry-After, hangs, slow answers, malformed or truncated JSON, dropped
connections, huge bodies, wrong keys, quota errors, and a token-bucket rate
limit and a concurrency limit that answer 429 like the real services.
Answers are derived from the input so tests can assert exact bytes:

  transcript  = "transcript of <filename> <first 12 hex of sha256(bytes)>"
                (or, when the file starts with "SAY:", the rest of it)
  DeepL       = "[<target_lang>] " + text        e.g. "[DE] Hello"
  OpenAI chat = "[<LANG>] " + user message, LANG from the system prompt's
                "language code: xx"

Control it at run time:
  POST /_control  JSON, any of:
      {"keys": {"openai": "...", "elevenlabs": "...", "deepl": "..."},
       "latency_ms": 0, "hang_seconds": 3600, "max_concurrency": 0,
       "rate": {"rps": 2, "burst": 2, "retry_after": true} | null,
       "faults": [RULE...]  (replace), "add_faults": [RULE...],
       "reset_stats": true}
    RULE: {"kind": "status"|"quota"|"concurrency"|"hang"|"slow"|
                   "malformed"|"truncated"|"partial"|"close"|"big"|"length"|
                   "body",
           "status": 503, "count": 1 (-1 = for ever), "probability": 1.0,
           "path": "/v1/...", "provider": "openai", "retry_after": "2",
           "headers": {...}, "message": "...", "code": "...",
           "seconds": 5 (hang), "ms": 500 (slow), "bytes": N (big),
           "prefix": "{", "item": "{},", "items": N, "suffix": "}" (body)}
  POST /_reset    back to the command-line settings, stats zeroed
  GET  /_stats    counters: requests, by_status, by_path, connections,
                  max_concurrency, max_body_bytes, max_texts, faults left,
                  and a log of the last requests

Run: fake_provider.py [--port 0] [--port-file F] [--max-seconds 600] ...
It prints "PORT <n>" on stdout and exits by itself after --max-seconds or
when its parent process goes away, so a crashed test never leaves it.
Standard library only.
"""

import argparse
import hashlib
import json
import os
import random
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

# No two share a run of 8 characters, nor with a provider name, so a test
# can tell which key leaked.
DEFAULT_KEYS = {"openai": "sk-fake-Op3nAi-K9q2Zt",
                "elevenlabs": "xi-fake-E1evn-Lb28Wm",
                "deepl": "dl-fake-Dp7Lx-4Rv8:fx"}
PATHS = {"/v1/speech-to-text": "elevenlabs",
         "/v1/audio/transcriptions": "openai",
         "/v1/chat/completions": "openai",
         "/v2/translate": "deepl"}
OPENAI_UPLOAD_MAX = 25 * 1024 * 1024
DEEPL_BODY_MAX = 128 * 1024
DEEPL_TEXTS_MAX = 50
DEEPL_TARGETS = {"AR", "BG", "CS", "DA", "DE", "EL", "EN-GB", "EN-US", "ES",
                 "ET", "FI", "FR", "HE", "HU", "ID", "IT", "JA", "KO", "LT",
                 "LV", "NB", "NL", "PL", "PT-BR", "PT-PT", "RO", "RU", "SK",
                 "SL", "SV", "TR", "UK", "ZH", "ZH-HANS", "ZH-HANT"}


def expected_transcript(filename, data):
    """The transcript the fake gives for an upload (tests import this)."""
    if data.startswith(b"SAY:"):
        try:
            return data[4:].decode("utf-8").strip()
        except UnicodeDecodeError:
            pass
    return "transcript of %s %s" % (filename,
                                    hashlib.sha256(data).hexdigest()[:12])


def word_timings(text):
    """Deterministic (word, start, end) triples; a pause after sentences."""
    out, t = [], 0.0
    for w in text.split():
        end = t + 0.1 + 0.05 * len(w)
        out.append((w, round(t, 3), round(end, 3)))
        t = end + (0.9 if w[-1] in ".!?" else 0.1)
    return out


class State:
    """Everything the handlers share, behind one lock."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        a = self.args
        with self.lock:
            self.keys = dict(DEFAULT_KEYS)
            for prov in DEFAULT_KEYS:
                v = getattr(a, "key_" + prov)
                if v:
                    self.keys[prov] = v
            self.latency_ms = a.latency_ms
            self.hang_seconds = a.hang_seconds
            self.max_concurrency = a.max_concurrency
            self.rate = ({"rps": a.rate, "burst": a.burst or max(1, a.rate),
                          "retry_after": a.rate_retry_after}
                         if a.rate > 0 else None)
            self.buckets = {}
            self.faults = []
            if a.fail_first:
                self.faults.append({"kind": "status", "status": 500,
                                    "count": a.fail_first})
            if a.fail_rate > 0:
                self.faults.append({"kind": "status", "status": 503,
                                    "count": -1, "probability": a.fail_rate})
            self.rng = random.Random(a.seed)
            self.reset_stats_locked()

    def reset_stats_locked(self):
        self.stats = {"requests": 0, "by_status": {}, "by_path": {},
                      "connections": 0, "inflight": 0, "max_concurrency": 0,
                      "max_body_bytes": 0, "max_texts": 0, "bad_keys": 0,
                      "rate_limited": 0, "concurrency_limited": 0,
                      "faults_fired": 0, "log": []}

    def control(self, req):
        with self.lock:
            if "keys" in req:
                self.keys.update(req["keys"])
            for k in ("latency_ms", "hang_seconds", "max_concurrency"):
                if k in req:
                    setattr(self, k, req[k])
            if "rate" in req:
                self.rate = req["rate"]
                self.buckets = {}
            if "faults" in req:
                self.faults = [dict(f) for f in req["faults"]]
            if "add_faults" in req:
                self.faults += [dict(f) for f in req["add_faults"]]
            if req.get("reset_stats"):
                self.reset_stats_locked()
            return self.settings_locked()

    def settings_locked(self):
        return {"latency_ms": self.latency_ms, "hang_seconds": self.hang_seconds,
                "max_concurrency": self.max_concurrency, "rate": self.rate,
                "faults": self.faults}

    def pick_fault(self, path, provider):
        """The first live rule matching this request, consumed once."""
        with self.lock:
            for f in self.faults:
                if f.get("count", 1) == 0:
                    continue
                if f.get("path") and not path.startswith(f["path"]):
                    continue
                if f.get("provider") and f["provider"] != provider:
                    continue
                if self.rng.random() >= f.get("probability", 1.0):
                    continue
                if f.get("count", 1) > 0:
                    f["count"] = f.get("count", 1) - 1
                self.stats["faults_fired"] += 1
                return dict(f)
        return None

    def take_token(self, provider):
        """Token bucket per provider: None = allowed, else seconds to wait."""
        with self.lock:
            if not self.rate or self.rate.get("rps", 0) <= 0:
                return None
            rps, burst = float(self.rate["rps"]), float(self.rate.get("burst", 1))
            now = time.monotonic()
            tokens, last = self.buckets.get(provider, (burst, now))
            tokens = min(burst, tokens + (now - last) * rps)
            if tokens >= 1.0:
                self.buckets[provider] = (tokens - 1.0, now)
                return None
            self.buckets[provider] = (tokens, now)
            self.stats["rate_limited"] += 1
            return (1.0 - tokens) / rps

    def enter(self):
        with self.lock:
            self.stats["inflight"] += 1
            n = self.stats["inflight"]
            self.stats["max_concurrency"] = max(self.stats["max_concurrency"], n)
            if self.max_concurrency and n > self.max_concurrency:
                self.stats["concurrency_limited"] += 1
                return False
            return True

    def leave(self):
        with self.lock:
            self.stats["inflight"] -= 1

    def record(self, entry):
        with self.lock:
            s = self.stats
            s["requests"] += 1
            st = str(entry["status"])
            s["by_status"][st] = s["by_status"].get(st, 0) + 1
            p = s["by_path"].setdefault(entry["path"], {})
            p[st] = p.get(st, 0) + 1
            s["max_body_bytes"] = max(s["max_body_bytes"], entry.get("bytes", 0))
            s["max_texts"] = max(s["max_texts"], entry.get("texts", 0))
            s["log"].append(entry)
            del s["log"][:-1000]

    def snapshot(self):
        with self.lock:
            out = json.loads(json.dumps(self.stats))
            out["faults"] = json.loads(json.dumps(self.faults))
            out["max_concurrency_limit"] = self.max_concurrency
            return out


def error_body(provider, status, code=None, message=None):
    """An error answer in the provider's own shape."""
    if provider == "openai":
        defaults = {400: ("invalid_request_error", None, "Bad request"),
                    401: ("invalid_request_error", "invalid_api_key",
                          "Incorrect API key provided."),
                    413: ("server_error", None,
                          "Maximum content size limit (26214400) exceeded"),
                    429: ("requests", "rate_limit_exceeded",
                          "Rate limit reached for requests"),
                    500: ("server_error", None, "The server had an error while "
                          "processing your request. Sorry about that!"),
                    503: ("server_error", None, "The engine is currently "
                          "overloaded, please try again later")}
        typ, dcode, dmsg = defaults.get(status, ("server_error", None,
                                                 "HTTP %d" % status))
        if code == "insufficient_quota":
            typ = "insufficient_quota"
        return {"error": {"message": message or dmsg, "type": typ,
                          "param": None, "code": code or dcode}}
    if provider == "elevenlabs":
        defaults = {401: ("invalid_api_key", "Invalid API key"),
                    422: ("invalid_parameters", "Invalid parameters"),
                    429: ("system_busy", "The system is experiencing heavy "
                          "traffic, please try again later"),
                    500: ("internal_error", "Internal server error"),
                    503: ("service_unavailable", "Service unavailable")}
        dcode, dmsg = defaults.get(status, ("error", "HTTP %d" % status))
        return {"detail": {"status": code or dcode, "message": message or dmsg}}
    defaults = {400: "Bad request", 403: "Authorization failure, check auth_key",
                413: "Request Entity Too Large", 429: "Too many requests",
                456: "Quota exceeded", 500: "Internal server error",
                503: "Service unavailable", 529: "Too many requests"}
    return {"message": message or defaults.get(status, "HTTP %d" % status)}


class ProviderError(Exception):
    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def parse_multipart(ctype, body):
    """{name: (filename or None, bytes)} from a multipart/form-data body;
    repeated names (timestamp_granularities[]) keep a list in name + "*"."""
    m = re.search(r'boundary="?([^";]+)"?', ctype or "")
    if not m:
        raise ProviderError(400, None)
    sep = b"--" + m.group(1).encode()
    fields = {}
    for part in body.split(sep)[1:]:
        if part.startswith(b"--"):
            break
        part = part[2:] if part.startswith(b"\r\n") else part
        head, _, data = part.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        disp = re.search(rb'name="([^"]*)"', head)
        fn = re.search(rb'filename="([^"]*)"', head)
        if not disp:
            continue
        name = disp.group(1).decode("utf-8", "replace")
        fields[name] = (fn.group(1).decode("utf-8", "replace") if fn else None,
                        data)
        fields.setdefault(name + "*", []).append(data.decode("utf-8", "replace"))
    return fields


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-provider/1.0"

    def setup(self):
        super().setup()
        with self.server.state.lock:
            self.server.state.stats["connections"] += 1

    def log_message(self, fmt, *args):
        if self.server.state.args.verbose:
            sys.stderr.write("fake_provider: " + (fmt % args) + "\n")

    # ---- plumbing ---------------------------------------------------
    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send(self, status, body, ctype="application/json", headers=None,
             close=False):
        if isinstance(body, (dict, list)):
            body = json.dumps(body, ensure_ascii=False).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        return status

    def do_GET(self):
        if self.path == "/_stats":
            self.send(200, self.server.state.snapshot())
        else:
            self.send(404, {"detail": "Not Found"})

    def do_POST(self):
        state = self.server.state
        body = self.read_body()
        if self.path == "/_control":
            self.send(200, state.control(json.loads(body or b"{}")))
            return
        if self.path == "/_reset":
            state.reset()
            self.send(200, {"ok": True})
            return
        path = self.path.split("?")[0]
        provider = PATHS.get(path)
        entry = {"path": path, "provider": provider, "bytes": len(body),
                 "t": round(time.time(), 3)}
        t0 = time.monotonic()
        admitted = state.enter()
        try:
            entry["status"] = self.serve(state, provider, path, body, admitted,
                                         entry)
        except ProviderError as e:
            entry["status"] = self.send(e.status, e.body if e.body is not None
                                        else error_body(provider, e.status),
                                        headers=e.headers)
        except (BrokenPipeError, ConnectionResetError):
            entry["status"] = 0
        finally:
            state.leave()
            entry["ms"] = int((time.monotonic() - t0) * 1000)
            state.record(entry)

    # ---- the request ------------------------------------------------
    def serve(self, state, provider, path, body, admitted, entry):
        if provider is None:
            raise ProviderError(404, {"detail": "Not Found"})
        if not admitted:
            code = ("too_many_concurrent_requests" if provider == "elevenlabs"
                    else None)
            raise ProviderError(429, error_body(provider, 429, code,
                                "Too many concurrent requests"))
        wait = state.take_token(provider)
        if wait is not None:
            hdrs = {}
            if provider == "openai":
                hdrs = {"x-ratelimit-limit-requests": state.rate["rps"],
                        "x-ratelimit-remaining-requests": 0,
                        "x-ratelimit-reset-requests": "%dms" % (wait * 1000 + 1)}
            if state.rate.get("retry_after"):
                hdrs["Retry-After"] = max(1, int(wait + 0.999))
            raise ProviderError(429, error_body(provider, 429), hdrs)
        fault = state.pick_fault(path, provider)
        if fault:
            entry["fault"] = fault.get("kind", "status")
            done = self.fault(state, fault, provider, path, body)
            if done is not None:
                return done
        self.check_key(state, provider)
        if state.latency_ms:
            time.sleep(state.latency_ms / 1000.0)
        if path == "/v1/speech-to-text":
            return self.send(200, self.elevenlabs(body, entry))
        if path == "/v1/audio/transcriptions":
            return self.openai_transcribe(body, entry)
        if path == "/v1/chat/completions":
            return self.send(200, self.openai_chat(body, entry, fault))
        return self.send(200, self.deepl(body, entry))

    def fault(self, state, f, provider, path, body):
        kind = f.get("kind", "status")
        hdrs = dict(f.get("headers", {}))
        if "retry_after" in f:
            hdrs["Retry-After"] = f["retry_after"]
        if kind == "status":
            st = int(f.get("status", 500))
            return self.send(st, error_body(provider, st, f.get("code"),
                                            f.get("message")), headers=hdrs)
        if kind == "quota":
            st = {"openai": 429, "elevenlabs": 401, "deepl": 456}[provider]
            code = {"openai": "insufficient_quota",
                    "elevenlabs": "quota_exceeded", "deepl": None}[provider]
            msg = {"openai": "You exceeded your current quota, please check "
                   "your plan and billing details.",
                   "elevenlabs": "This request exceeds your quota.",
                   "deepl": "Quota exceeded"}[provider]
            return self.send(st, error_body(provider, st, code, msg),
                             headers=hdrs)
        if kind == "concurrency":
            return self.send(429, error_body(provider, 429,
                             "too_many_concurrent_requests",
                             "Too many concurrent requests"), headers=hdrs)
        if kind == "hang":
            time.sleep(float(f.get("seconds", state.hang_seconds)))
            return None
        if kind == "slow":
            time.sleep(float(f.get("ms", 1000)) / 1000.0)
            return None
        if kind == "malformed":
            return self.send(200, b"{\"text\": this is not json")
        if kind == "truncated":
            whole = json.dumps({"text": "truncated answer " * 20,
                                "translations": [], "choices": []}).encode()
            return self.send(200, whole[:len(whole) // 2])
        if kind == "big":
            n = int(f.get("bytes", 1 << 20))
            return self.send(200, b"{\"text\": \"" + b"x" * n + b"\"}")
        if kind == "body":
            # a 200 with any body: prefix + item * items + suffix (hostile
            # answers such as {"words":[{},{},...]} of 24 MB, or a refusal)
            raw = (f.get("prefix", "") + f.get("item", "") *
                   int(f.get("items", 0)) + f.get("suffix", "")).encode()
            return self.send(200, raw)
        if kind == "partial":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"{\"text\": \"only part of it")
            self.wfile.flush()
            self.close_connection = True
            return 200
        if kind == "close":
            self.close_connection = True
            return 0
        return None     # "length" and unknown kinds act later or not at all

    def check_key(self, state, provider):
        key = state.keys[provider]
        if provider == "elevenlabs":
            ok = self.headers.get("xi-api-key") == key
            status = 401
        elif provider == "openai":
            got = self.headers.get("Authorization", "")
            ok = got == "Bearer " + key
            status = 401
        else:
            ok = self.headers.get("Authorization") == "DeepL-Auth-Key " + key
            status = 403
        if not ok:
            with state.lock:
                state.stats["bad_keys"] += 1
            raise ProviderError(status, None)

    # ---- providers --------------------------------------------------
    def upload(self, body, need):
        fields = parse_multipart(self.headers.get("Content-Type"), body)
        for name in need:
            if name not in fields or fields[name][1] == b"" and name != "file":
                raise ProviderError(422 if need[0] == "model_id" else 400, None)
        return fields

    def elevenlabs(self, body, entry):
        f = self.upload(body, ["model_id", "file"])
        filename, data = f["file"]
        entry.update(model=f["model_id"][1].decode(), filename=filename)
        if not data:
            raise ProviderError(400, error_body("elevenlabs", 400, "invalid_file",
                                                "The uploaded file is empty"))
        text = expected_transcript(filename, data)
        words = []
        for i, (w, s, e) in enumerate(word_timings(text)):
            if i:
                words.append({"text": " ", "start": words[-1]["end"], "end": s,
                              "type": "spacing", "logprob": 0.0})
            words.append({"text": w, "start": s, "end": e, "type": "word",
                          "logprob": 0.0})
        if f.get("diarize", (None, b""))[1] == b"true":
            for w in words:
                w["speaker_id"] = "speaker_0"
        lang = f.get("language_code", (None, b"eng"))[1].decode()
        return {"language_code": lang, "language_probability": 0.99,
                "text": text, "words": words}

    def openai_transcribe(self, body, entry):
        if len(body) > OPENAI_UPLOAD_MAX:
            raise ProviderError(413, error_body("openai", 413, None,
                                "Maximum content size limit (26214400) "
                                "exceeded (%d bytes read)" % len(body)))
        f = self.upload(body, ["model", "file"])
        filename, data = f["file"]
        model = f["model"][1].decode()
        fmt = f.get("response_format", (None, b"json"))[1].decode()
        grains = f.get("timestamp_granularities[]*", ["segment"])
        entry.update(model=model, filename=filename, format=fmt)
        if fmt == "verbose_json" and not model.startswith("whisper"):
            raise ProviderError(400, error_body("openai", 400, None,
                                "response_format 'verbose_json' is not "
                                "compatible with model '%s'" % model))
        text = expected_transcript(filename, data)
        if fmt == "text":
            return self.send(200, text + "\n", "text/plain; charset=utf-8")
        if fmt != "verbose_json":
            return self.send(200, {"text": text})
        timings = word_timings(text)
        segs, cur = [], []
        for w in timings:
            cur.append(w)
            if w[0][-1] in ".!?" or w is timings[-1]:
                segs.append({"id": len(segs), "seek": 0, "start": cur[0][1],
                             "end": cur[-1][2],
                             "text": " " + " ".join(x[0] for x in cur),
                             "tokens": [], "temperature": 0.0,
                             "avg_logprob": -0.2, "compression_ratio": 1.0,
                             "no_speech_prob": 0.01})
                cur = []
        out = {"task": "transcribe", "language": "english",
               "duration": timings[-1][2] if timings else 0.0, "text": text}
        if "segment" in grains:
            out["segments"] = segs
        if "word" in grains:
            out["words"] = [{"word": w.strip(".,!?"), "start": s, "end": e}
                            for w, s, e in timings]
        return self.send(200, out)

    def openai_chat(self, body, entry, fault):
        try:
            req = json.loads(body)
            msgs = req["messages"]
            model = req["model"]
        except (ValueError, KeyError, TypeError):
            raise ProviderError(400, None)
        system = " ".join(m.get("content", "") for m in msgs
                          if m.get("role") == "system")
        user = [m.get("content", "") for m in msgs if m.get("role") == "user"]
        m = re.search(r"language code: ([A-Za-z-]+)", system)
        lang = m.group(1).upper() if m else "??"
        entry.update(model=model, temperature=req.get("temperature"),
                     lang=lang, texts=1)
        content = "[%s] %s" % (lang, user[-1] if user else "")
        finish = "length" if fault and fault.get("kind") == "length" else "stop"
        return {"id": "chatcmpl-fake", "object": "chat.completion",
                "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "finish_reason": finish,
                             "message": {"role": "assistant",
                                         "content": content}}],
                "usage": {"prompt_tokens": len(body) // 4,
                          "completion_tokens": len(content) // 4,
                          "total_tokens": (len(body) + len(content)) // 4}}

    def deepl(self, body, entry):
        if len(body) > DEEPL_BODY_MAX:
            raise ProviderError(413, None)
        ctype = self.headers.get("Content-Type", "")
        try:
            if ctype.startswith("application/json"):
                req = json.loads(body)
                texts, target = req.get("text"), req.get("target_lang")
            else:
                q = parse_qs(body.decode())
                texts, target = q.get("text"), (q.get("target_lang") or [None])[0]
        except (ValueError, UnicodeDecodeError):
            raise ProviderError(400, error_body("deepl", 400, None,
                                                "Invalid request body"))
        entry.update(texts=len(texts or []), target=target)
        if not isinstance(texts, list) or not texts:
            raise ProviderError(400, error_body("deepl", 400, None,
                                "Parameter 'text' not specified."))
        if len(texts) > DEEPL_TEXTS_MAX:
            raise ProviderError(413, error_body("deepl", 413, None,
                                "Too many texts: at most 50 per request"))
        if not target or target.upper() not in DEEPL_TARGETS:
            raise ProviderError(400, error_body("deepl", 400, None,
                                "Value for 'target_lang' not supported."))
        return {"translations": [{"detected_source_language": "EN",
                                  "text": "[%s] %s" % (target.upper(), t)}
                                 for t in texts]}


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, args):
        super().__init__(("127.0.0.1", args.port), Handler)
        self.state = State(args)
        self.port = self.server_address[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--max-seconds", type=float, default=600)
    p.add_argument("--latency-ms", type=int, default=0)
    p.add_argument("--hang-seconds", type=float, default=3600)
    p.add_argument("--fail-rate", type=float, default=0.0,
                   help="answer 503 with this probability")
    p.add_argument("--fail-first", type=int, default=0,
                   help="answer 500 to the first N requests")
    p.add_argument("--rate", type=float, default=0.0, help="requests/s")
    p.add_argument("--burst", type=float, default=0.0)
    p.add_argument("--rate-retry-after", action="store_true")
    p.add_argument("--max-concurrency", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    for prov in DEFAULT_KEYS:
        p.add_argument("--key-" + prov, dest="key_" + prov)
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def serve_in_thread(argv=None):
    """Start a server in this process (for pytest); returns it.  Call
    .shutdown() and .server_close() when done."""
    srv = FakeServer(parse_args(argv or []))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main():
    args = parse_args()
    srv = FakeServer(args)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as fp:
            fp.write("%d\n" % srv.port)
        os.rename(tmp, args.port_file)
    print("PORT %d" % srv.port, flush=True)
    parent = os.getppid()
    deadline = time.monotonic() + args.max_seconds

    def watchdog():
        while time.monotonic() < deadline and os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
