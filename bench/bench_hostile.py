"""bench_hostile.py - peak memory of a worker decoding a hostile answer.

A provider that sends {"words":[{},{},...]} makes a JSON decoder build one
object per three bytes: 24 MB of it once drove a worker to 1.9 GB.  This
runs `mpfarm run --workers 1` with the ElevenLabs provider against a server
on 127.0.0.1 three times, sampling the worker's VmHWM (peak resident
memory, /proc/PID/status) as bench_upload.py does:

  baseline  a real-shaped answer of about 5 MB (20,000 timed words)
  hostile   24 MB of empty objects, default response cap (16 MiB)
  budget    the same 24 MB with [elevenlabs] max_response_bytes = 32 MiB,
            so the body is read whole and only the decoder's memory budget
            (16 x the body) stands in the way

Each run has a second file whose answer comes a second late, so the worker
that decoded the first is still alive when it is measured.  The hostile
runs must fail their job (exit 3) and stay under TARGET_FACTOR x the
response cap; the baseline must succeed.
"""
import argparse
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time

from bench_upload import children, vmhwm_kib

HOSTILE = b'{"text": "x", "words": [' + b"{}," * (8 * 1000 * 1000) + b"{}]}"
TARGET_FACTOR = 20      # peak worker memory <= 20 x the response cap


def normal_body(nwords=20000):
    words, t = [], 0.0
    for i in range(nwords):
        if i:
            words.append({"text": " ", "start": t, "end": t + 0.05,
                          "type": "spacing", "logprob": 0.0})
        words.append({"text": "word%d" % (i % 97), "start": round(t, 3),
                      "end": round(t + 0.3, 3), "type": "word",
                      "logprob": -0.12, "speaker_id": "speaker_0"})
        t += 0.35
    return json.dumps({"language_code": "eng", "language_probability": 0.99,
                       "text": " ".join(w["text"] for w in words
                                        if w["type"] == "word"),
                       "words": words}).encode()


class Server(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    first = b""
    served = 0

    def log_message(self, *a):
        pass

    def do_POST(self):
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            got = len(self.rfile.read(min(left, 1 << 20)))
            if got == 0:
                break
            left -= got
        Server.served += 1
        if Server.served == 1:
            body = Server.first
        else:
            time.sleep(1.0)
            body = b'{"text": "late", "words": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass        # the worker hung up on a body over its cap


def one_run(mpfarm, workdir, port, body, extra):
    Server.first, Server.served = body, 0
    root = os.path.join(workdir, "mpfarm-hostile-%d" % os.getpid())
    try:
        os.makedirs(os.path.join(root, "media"))
        for name in ("a.mp3", "b.mp3"):
            with open(os.path.join(root, "media", name), "wb") as f:
                f.write(b"fake media " + name.encode())
        with open(os.path.join(root, "mpfarm.conf"), "w") as f:
            f.write("[farm]\nmax_attempts = 1\n[transcribe]\nprovider = "
                    "elevenlabs\n[elevenlabs]\nbase_url = http://127.0.0.1:%d\n"
                    "%s" % (port, extra))
        subprocess.run([mpfarm, "scan", "media"], cwd=root, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env = dict(os.environ, ELEVENLABS_API_KEY="bench-hostile-key")
        p = subprocess.Popen([mpfarm, "run", "--workers", "1"], cwd=root,
                             env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        peak = 0
        deadline = time.monotonic() + 300
        while p.poll() is None and time.monotonic() < deadline:
            for k in children(p.pid):
                peak = max(peak, vmhwm_kib(k))
            time.sleep(0.02)
        if p.poll() is None:
            p.kill()
        return p.wait(), peak
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpfarm", required=True)
    ap.add_argument("--workdir", default="/var/tmp")
    args = ap.parse_args()
    mpfarm = os.path.abspath(args.mpfarm)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    normal = normal_body()
    cap16, cap32 = 16 << 20, 32 << 20
    try:
        base_rc, base = one_run(mpfarm, args.workdir, srv.server_port,
                                normal, "")
        h_rc, hostile = one_run(mpfarm, args.workdir, srv.server_port,
                                HOSTILE, "")
        b_rc, budget = one_run(mpfarm, args.workdir, srv.server_port, HOSTILE,
                               "max_response_bytes = %d\n" % cap32)
    finally:
        srv.shutdown()
    mib = 1024.0
    print("Hostile answer: one worker decodes an ElevenLabs response")
    print("  baseline %4.1f MB real-shaped answer  peak RSS %6.1f MiB   "
          "exit %d (0 expected)" % (len(normal) / 1e6, base / mib, base_rc))
    ok = h_rc == 3 and 0 < hostile <= TARGET_FACTOR * cap16 / 1024
    print("  hostile  %4.1f MB {} x 8M, cap 16 MiB  peak RSS %6.1f MiB   "
          "exit %d   %s" % (len(HOSTILE) / 1e6, hostile / mib, h_rc,
                             "PASS" if ok else "MISS"))
    ok = b_rc == 3 and 0 < budget <= TARGET_FACTOR * cap32 / 1024
    print("  hostile  %4.1f MB {} x 8M, cap 32 MiB  peak RSS %6.1f MiB   "
          "exit %d   %s  (target <= %d x cap; 1.9 GB before the budget)"
          % (len(HOSTILE) / 1e6, budget / mib, b_rc, "PASS" if ok else "MISS",
             TARGET_FACTOR))
    return 0


if __name__ == "__main__":
    sys.exit(main())
