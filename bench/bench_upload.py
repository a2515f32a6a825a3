"""bench_upload.py - peak memory of a worker while it uploads a large file.

Uploads must stream from disk: a multi-gigabyte video never sits in a
worker's memory.  This makes a sparse 1 GiB .mp4, runs `mpfarm run
--workers 1` with the ElevenLabs provider against a sink server on
127.0.0.1 that reads the upload in 1 MiB pieces, discards it, and answers
a valid speech-to-text JSON.  It samples the worker's VmHWM (peak resident
memory, from /proc/PID/status) until the run ends and prints it beside the
target (16 MiB) and, as a baseline measured in the same run, the master's.
The sink counts the bytes it received, so a short upload cannot pass.
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

TARGET_KIB = 16 * 1024


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received = 0

    def log_message(self, *a):
        pass

    def _drain(self):
        n = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0] or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return n
                while size > 0:
                    got = len(self.rfile.read(min(size, 1 << 20)))
                    if got == 0:
                        return n
                    n += got
                    size -= got
                self.rfile.readline()
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            got = len(self.rfile.read(min(left, 1 << 20)))
            if got == 0:
                break
            n += got
            left -= got
        return n

    def do_POST(self):
        Sink.received += self._drain()
        body = json.dumps({"language_code": "en", "text": "a large file",
                           "words": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def vmhwm_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(d))
            except OSError:
                pass
    return kids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpfarm", required=True)
    ap.add_argument("--workdir", default="/var/tmp")
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args()
    args.mpfarm = os.path.abspath(args.mpfarm)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    root = os.path.join(args.workdir, "mpfarm-upload-%d" % os.getpid())
    try:
        os.makedirs(os.path.join(root, "media"))
        big = os.path.join(root, "media", "big.mp4")
        with open(big, "wb") as f:
            f.truncate(args.size_mib << 20)
        with open(os.path.join(root, "mpfarm.conf"), "w") as f:
            f.write("[transcribe]\nprovider = elevenlabs\n[elevenlabs]\n"
                    "base_url = http://127.0.0.1:%d\n" % srv.server_port)
        subprocess.run([args.mpfarm, "scan", "media"], cwd=root, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env = dict(os.environ, ELEVENLABS_API_KEY="bench-upload-key")
        t0 = time.monotonic()
        p = subprocess.Popen([args.mpfarm, "run", "--workers", "1"], cwd=root,
                             env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        worker, peak, master = None, 0, 0
        deadline = time.monotonic() + 300
        while p.poll() is None and time.monotonic() < deadline:
            if worker is None:
                kids = children(p.pid)
                worker = kids[0] if kids else None
            if worker is not None:
                peak = max(peak, vmhwm_kib(worker))
            master = max(master, vmhwm_kib(p.pid))
            time.sleep(0.05)
        if p.poll() is None:
            p.kill()
        rc = p.wait()
        wall = time.monotonic() - t0
    finally:
        srv.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    sent = Sink.received
    ok = rc == 0 and sent >= (args.size_mib << 20) and 0 < peak <= TARGET_KIB
    print("Upload: one worker streams a %d MiB file to a sink on 127.0.0.1"
          % args.size_mib)
    print("  worker peak RSS (VmHWM)  %6.1f MiB   target <= 16 MiB   %s" % (
        peak / 1024.0, "PASS" if ok else "MISS"))
    print("  master peak RSS (VmHWM)  %6.1f MiB   (baseline: it uploads nothing)"
          % (master / 1024.0))
    print("  bytes received %d of %d, %.1f s, exit %d" % (
        sent, args.size_mib << 20, wall, rc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
