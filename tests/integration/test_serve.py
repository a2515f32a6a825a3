"""`mpfarm serve`: the read-only dashboard, /metrics and /api/status, over
a database filled by a real run against the fake provider (two
transcriptions refused with HTTP 400), with and without a master running.
/metrics is parsed line by line as Prometheus text and every sample is
checked against `status --json`; /api/status must equal it; the page's
figures must match; hostile URLs and a file named <script>... are answered
safely; a headless Chromium follows the failed job to its file page."""
import json
import os
import re
import shutil
import time

import pytest

import storelib
from conftest import REPO, SLOW, wait_for
from test_commands import no_store
from servelib import (ENV, FAILED_TRANSCRIPTS, HOSTILE, Serve,  # noqa: F401
                      config, fake, fill, filled)

ARTIFACTS = REPO / "build" / "artifacts"
# figures that move with the clock between two reads
VOLATILE = {"age_s", "uptime_s", "updated_at_ms", "job_age_s", "rate_per_s",
            "oldest_in_progress_age_s"}


def status_json(farm):
    return json.loads(farm.run("status", "--json", check=True).stdout)


def strip(o):
    if isinstance(o, dict):
        return {k: strip(v) for k, v in o.items() if k not in VOLATILE}
    if isinstance(o, list):
        return [strip(v) for v in o]
    return o


# ---- Prometheus text ------------------------------------------------------
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(r"^(%s)(?:\{(.*)\})? (\S+)$" % NAME)
LABEL = re.compile(r'(%s)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)' % NAME)


def parse_metrics(text):
    """[(name, {labels}, value)], checking the exposition format: HELP and
    TYPE once per family and before its samples, counters named _total,
    every line well formed, the text ending with a newline."""
    assert text.endswith("\n")
    types, helps, samples, seen = {}, set(), [], set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert re.fullmatch(NAME, name) and name not in helps
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert name not in types and name not in seen
            assert typ in ("gauge", "counter")
            assert name.endswith("_total") == (typ == "counter"), name
            types[name] = typ
            continue
        m = SAMPLE.match(line)
        assert m, "not a Prometheus sample: %r" % line
        name, labels, value = m.group(1), m.group(2), m.group(3)
        assert name in types and name in helps, name
        assert name.startswith("mpfarm_")
        lab = {}
        if labels:
            pos = 0
            while pos < len(labels):
                lm = LABEL.match(labels, pos)
                assert lm, "bad labels %r" % labels
                lab[lm.group(1)] = lm.group(2)
                pos = lm.end()
        key = (name, tuple(sorted(lab.items())))
        assert key not in seen, "duplicate sample %r" % (key,)
        seen.add(key)
        seen.add(name)
        samples.append((name, lab, float(value)))
    return samples


def stage_key(lab):
    return lab["stage"] + (":" + lab["lang"] if lab.get("lang") else "")


def expected(st, name, lab):
    """The value status --json gives for one sample (and a tolerance)."""
    farm = st.get("farm") or {}
    provs = st["providers"]
    simple = {
        "mpfarm_files": (st["files"], 0),
        "mpfarm_oldest_in_progress_age_seconds":
            (st["oldest_in_progress_age_s"], 3),
        "mpfarm_master_up": (int(bool(farm) and not farm.get("stale")), 0),
        "mpfarm_master_uptime_seconds": (farm.get("uptime_s"), 3),
        "mpfarm_status_age_seconds": (farm.get("age_s"), 3),
        "mpfarm_workers_target": (farm.get("workers_target"), 0),
        "mpfarm_queue_depth": (farm.get("queue_depth"), 0),
        "mpfarm_worker_respawns_total": (farm.get("respawns"), 0),
        "mpfarm_hung_kills_total": (farm.get("hung_kills"), 0),
        "mpfarm_jobs_per_second": (farm.get("rate_per_s"), 1),
    }
    if name in simple:
        return simple[name]
    if name == "mpfarm_jobs":
        return st["stages"][stage_key(lab)][lab["status"]], 0
    if name == "mpfarm_jobs_waiting_for_transcript":
        return st["waiting_for_transcript"][stage_key(lab)], 0
    if name == "mpfarm_jobs_waiting_for_retry":
        return st["waiting_for_retry"][stage_key(lab)], 0
    if name == "mpfarm_workers":
        return sum(1 for s in farm["slots"] if s["state"] == lab["state"]), 0
    field = {"mpfarm_jobs_completed_total": "done",
             "mpfarm_jobs_failed_total": "failed",
             "mpfarm_jobs_retried_total": "retried"}.get(name)
    if field:
        return farm["stages"][lab["stage"]][field], 0
    field = {"mpfarm_provider_inflight": "inflight",
             "mpfarm_provider_limit": "limit",
             "mpfarm_provider_requests_total": "requests",
             "mpfarm_provider_rate_limited_total": "rate_limited",
             "mpfarm_provider_paused_seconds": "paused_s"}.get(name)
    if field:
        return provs[lab["provider"]][field], 0
    raise AssertionError("sample %s has no counterpart in status --json"
                         % name)


def check_metrics(farm, srv, tries=10):
    """Every sample of /metrics against status --json read right after.
    A live master may change a figure between the two reads (a slot going
    from starting to idle): then both are read again, a bounded number of
    times; the last try must match."""
    for i in range(tries):
        st, h, body = srv.get("/metrics")
        assert st == 200
        assert h["Content-Type"].startswith("text/plain; version=0.0.4")
        samples = parse_metrics(body.decode())
        js = status_json(farm)
        bad = []
        for name, lab, value in samples:
            want, tol = expected(js, name, lab)
            assert want is not None, name
            if abs(value - want) > tol:
                bad.append((name, lab, value, want))
        if not bad:
            return samples, js
        time.sleep(0.5)
    raise AssertionError("metrics differ from status --json: %r" % bad)


def page_figures(html):
    """{stage key: {status: n}} from the progress table."""
    out = {}
    for m in re.finditer(r'<tr data-stage="([^"]*)">(.*?)</tr>', html, re.S):
        out[m.group(1)] = {s: int(n) for s, n in re.findall(
            r'<td class="n" data-status="([^"]+)">(\d+)</td>', m.group(2))}
    return out


# ---- tests -----------------------------------------------------------------
def test_no_master_metrics_api_and_page(filled):
    farm = filled
    srv = Serve(farm)
    samples, js = check_metrics(farm, srv)
    names = {s[0] for s in samples}
    assert "mpfarm_master_up" in names and "mpfarm_jobs" in names
    assert ("mpfarm_master_up", {}, 0.0) in samples
    # jobs per stage/lang/status add up to the jobs in the database
    assert sum(v for n, _, v in samples if n == "mpfarm_jobs") == \
        farm.scalar("SELECT count(*) FROM jobs")
    failed = [(l, v) for n, l, v in samples if n == "mpfarm_jobs"
              and l["status"] == "failed" and v > 0]
    assert failed == [({"stage": "transcribe", "lang": "",
                        "status": "failed"}, FAILED_TRANSCRIPTS)]
    # /api/status is status --json, exactly (no master: nothing moves)
    assert srv.json("/api/status") == js
    assert js["providers"] == {}
    # the page: its figures are the database's
    html = srv.text("/")
    figs = page_figures(html)
    assert set(figs) == set(js["stages"])
    for key, counts in js["stages"].items():
        assert figs[key] == counts
    assert "No master is running" in html
    assert len(re.findall(r'<tr><td><a href="/file/\d+">', html)) == \
        FAILED_TRANSCRIPTS
    done = farm.scalar("SELECT count(*) FROM attempts WHERE outcome = "
                       "'completed'")
    assert 'data-completed="%d"' % done in html
    srv.stop(farm)


def test_live_master_providers_and_workers(farm, fake):
    fill(farm, fake)
    # a master that stays: --watch with a long interval, nothing to do
    master = farm.popen("run", "--watch", "--check-interval", "3600",
                        env=ENV)
    srv = Serve(farm)
    # a live master whose figures have arrived: on PostgreSQL its hosts
    # row exists (not stale) before the first heartbeat carries them
    js = wait_for(lambda: (lambda j: j if j.get("farm") and not
                           j["farm"].get("stale") and "slots" in j["farm"]
                           else None)(status_json(farm)), timeout=20,
                  what="the live master's figures")
    # per-provider figures: an object of objects
    for name, p in js["providers"].items():
        assert set(p) >= {"inflight", "limit", "requests", "rate_limited",
                          "paused_s"}
    assert js["providers"]["elevenlabs"]["limit"] == 2
    samples, js = check_metrics(farm, srv)
    names = {s[0] for s in samples}
    assert ("mpfarm_master_up", {}, 1.0) in samples
    assert {"mpfarm_workers", "mpfarm_worker_respawns_total",
            "mpfarm_hung_kills_total", "mpfarm_queue_depth",
            "mpfarm_jobs_completed_total"} <= names
    api = srv.json("/api/status")
    assert strip(api) == strip(status_json(farm))
    html = srv.text("/")
    assert "Master pid %d running" % master.pid in html
    assert '<table id="slots">' in html
    # the text status speaks in sentences, not key=value
    text = farm.run("status", check=True).stdout
    assert "- The master (pid %d) has been running for" % master.pid in text
    assert "- Workers: " in text and " running, " in text
    assert "=" not in text.split("Farm:")[1]
    master.terminate()
    farm.wait(master, timeout=30)
    srv.stop(farm)


def test_hostile_urls_and_names(filled):
    farm = filled
    srv = Serve(farm)
    for path in ("/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
                 "/file/../../etc/passwd", "/file/1/../../etc/passwd",
                 "/etc/passwd", "/media_tracking.db", "/file/%2e%2e",
                 "/file/1x", "/file/", "/index.html", "//etc/passwd"):
        st, h, body = srv.get(path)
        assert st in (400, 404), (path, st)
        assert b"root:" not in body and b"SQLite format" not in body
    st, h, body = srv.get("/" + "a" * 100000)
    assert st in (414, 431), st
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        st, h, body = srv.get("/", method=method, body=b"x=1")
        assert st == 405 and h["Allow"] == "GET, HEAD"
    st, h, body = srv.get("/metrics", body=b"x" * 10)
    assert st == 413
    st, h, body = srv.get("/", method="HEAD")
    assert st == 200 and body == b""
    assert h["Content-Type"] == "text/html; charset=utf-8"
    # the file named <script>alert(1)</script>.mp3 is text everywhere
    # (paths read as bytes: the same on both stores)
    fids = [i for i, r in farm.query("SELECT file_id, rel_path FROM "
                                     "media_files")
            if (r if isinstance(r, bytes) else r.encode()) ==
            HOSTILE.encode()]
    assert len(fids) == 1, fids
    fid = fids[0]
    page = srv.text("/file/%d" % fid)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.mp3" in page
    assert "<script>alert" not in page
    assert "<script>alert" not in srv.text("/")
    st, h, _ = srv.get("/file/999999")
    assert st == 404
    # the server still answers after all that
    assert srv.get("/metrics")[0] == 200
    srv.stop(farm)


def test_database_missing_then_created(farm, fake):
    farm.write_config(config(fake))
    srv = Serve(farm)
    st, h, body = srv.get("/api/status")
    # on PostgreSQL the database exists, empty: no mpfarm schema in it
    assert st == 503, (st, body)
    if storelib.PG:
        assert farm.db.encode() in body and b"no mpfarm schema" in body, body
    else:
        assert b"media_tracking.db" in body, body
    assert no_store(farm)              # serve never creates it
    (farm.media).mkdir()
    (farm.media / "x.mp3").write_bytes(b"SAY: x")
    farm.scan()
    assert srv.json("/api/status")["files"] == 1
    srv.stop(farm)


def test_serve_never_writes(filled):
    farm = filled
    before = farm.dump()
    if not storelib.PG:
        os.chmod(farm.db, 0o444)
    srv = Serve(farm)
    srv.text("/")
    srv.text("/metrics")
    srv.get("/file/1")
    srv.stop(farm)
    assert farm.dump() == before


def test_listen_errors(farm):
    farm.write_config("[serve]\nlisten = nonsense\n[transcribe]\n"
                      "provider = noop\n[translate]\nprovider = noop\n"
                      "languages = en\n")
    p = farm.run("serve")
    assert p.returncode == 2 and "ADDR:PORT" in p.stderr
    farm.write_config("[serve]\nbogus = 1\n")
    p = farm.run("serve")
    assert p.returncode == 2 and "unknown key \"bogus\" in [serve]" in p.stderr


def chromium_driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu",
              "--disable-dev-shm-usage", "--window-size=1200,1400"):
        opts.add_argument(a)
    binary = shutil.which("chromium")
    if binary:
        opts.binary_location = binary
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")
                                            or "/usr/bin/chromedriver"),
                            options=opts)


def test_browser_follows_failed_job(filled):
    try:
        from selenium.webdriver.common.by import By
        driver = chromium_driver()
    except Exception as e:      # no browser on this machine
        pytest.skip("headless chromium cannot start (install chromium, "
                    "chromium-driver, python3-selenium): %s" % e)
    farm = filled
    srv = Serve(farm)
    try:
        driver.set_page_load_timeout(60 * SLOW)
        driver.get(srv.url + "/")
        totals = driver.find_element(By.ID, "totals")
        js = status_json(farm)
        done = sum(s["completed"] for s in js["stages"].values())
        assert str(done) in totals.text
        rows = driver.find_elements(By.CSS_SELECTOR, "#failed tbody tr")
        assert len(rows) == FAILED_TRANSCRIPTS
        assert "400" in rows[0].text
        # the filter hides what does not match, in the browser
        driver.find_element(By.ID, "filter").send_keys("no-such-thing")
        assert driver.find_element(By.ID, "failed-shown").text == "0"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.find_element(By.ID, "filter").clear()
        driver.get(srv.url + "/")
        driver.save_screenshot(str(ARTIFACTS / "serve.png"))
        link = driver.find_element(By.CSS_SELECTOR, "#failed tbody a")
        name = link.text
        link.click()
        wait_for(lambda: "/file/" in driver.current_url, timeout=20)
        assert driver.find_element(By.ID, "file").text == name
        assert "failed" in driver.find_element(
            By.CSS_SELECTOR, ".job-status").text
        driver.save_screenshot(str(ARTIFACTS / "serve-file.png"))
    finally:
        driver.quit()
        srv.stop(farm)
    assert (ARTIFACTS / "serve.png").stat().st_size > 1000
