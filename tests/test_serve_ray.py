"""``t2v-rt serve --ray --replicas 2`` on a local Ray: two t2v-rt servers behind Ray Serve's
HTTP proxy, every request of a stream served by the replica that holds it (its id says which,
``X-T2V-Replica`` shows who answered), videos decoded, a PATCH reaching the right stream, the
replicas' health and metrics merged, SIGTERM a clean exit."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import threading
import time

import av
import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="needs Ray Serve: pip install -e '.[ray]' "
                    "(.ci/run installs it)")
httpx = pytest.importorskip("httpx")

CMD = [sys.executable, "-m", "t2v_rt"]
RED = "a large red circle moving left and right slowly on a black background"
BLUE = "a large blue circle moving left and right slowly on a black background"


@pytest.fixture(scope="module")
def ray_server():
    proc = subprocess.Popen([*CMD, "serve", "--ray", "--replicas", "2", "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def pump():
        for line in proc.stderr:
            lines.append(line)
            if "serving http://" in line:
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    ready.wait(100)
    found = [m for m in (re.search(r"serving (http://[\d.]+:\d+)", x) for x in lines) if m]
    if not found:
        proc.kill()
        pytest.fail("t2v-rt serve --ray did not start:\n" + "".join(lines[-40:]))
    client = httpx.Client(base_url=found[0].group(1), timeout=30)
    client.proc, client.lines = proc, lines
    yield client
    client.close()
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _decode(data: bytes):
    with av.open(io.BytesIO(data), format="matroska") as c:
        stream = c.streams.video[0]
        frames, pts = [], []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            pts.append(round(f.pts * stream.time_base * 15))
    return np.stack(frames), pts


def _colour(frame: np.ndarray) -> np.ndarray:
    px = frame.reshape(-1, 3).astype(np.float64)
    return px[px.max(1) > 80].mean(0)


def test_streams_are_pinned_to_their_replicas(ray_server):
    h = ray_server
    made = []
    for _ in range(2):
        r = h.post("/api/streams", json={"prompt": RED, "size": 64, "fps": 15, "frames": 45})
        assert r.status_code == 201, r.text
        made.append((r.json(), r.headers["x-t2v-replica"]))
    (a, rep_a), (b, rep_b) = made
    # placed on the least loaded replica: one stream each; the id names its replica
    assert {rep_a, rep_b} == {"0", "1"}
    assert a["id"].startswith(f"r{rep_a}-") and b["id"].startswith(f"r{rep_b}-")
    assert a["video_url"].startswith(str(h.base_url))
    for info, rep in made:
        for _ in range(3):      # the ingress routes each request to the stream's replica
            r = h.get(f"/api/streams/{info['id']}")
            assert r.status_code == 200 and r.headers["x-t2v-replica"] == rep
    health = h.get("/api/health").json()
    assert health["replicas_up"] == 2 and health["streams"] == 2
    assert sorted(x["streams"] for x in health["replicas"]) == [1, 1]
    assert {s["id"] for s in h.get("/api/streams").json()} == {a["id"], b["id"]}

    # both videos at once, through Ray Serve's proxy; b's prompt changed while it plays
    out: dict = {}

    def read(info, key):
        data = bytearray()
        with h.stream("GET", info["video_url"]) as r:
            out[key + "_replica"] = r.headers["x-t2v-replica"]
            assert r.status_code == 200
            for chunk in r.iter_raw():
                data += chunk
        out[key] = bytes(data)

    readers = [threading.Thread(target=read, args=(info, key))
               for info, key in ((a, "a"), (b, "b"))]
    for t in readers:
        t.start()
    time.sleep(1.0)
    r = h.patch(f"/api/streams/{b['id']}", json={"prompt": BLUE, "morph_seconds": 0.2})
    assert r.status_code == 200 and r.json()["prompt"] == BLUE
    assert r.headers["x-t2v-replica"] == rep_b
    for t in readers:
        t.join(30)
    assert out["a_replica"] == rep_a and out["b_replica"] == rep_b
    frames_a, pts_a = _decode(out["a"])
    frames_b, pts_b = _decode(out["b"])
    assert pts_a == list(range(45)) and pts_b == list(range(45))
    red_a, first_b, last_b = _colour(frames_a[-1]), _colour(frames_b[0]), _colour(frames_b[-1])
    assert red_a[0] > 150 and red_a[2] < 80             # a untouched
    assert first_b[0] > 150 and first_b[2] < 80         # b red, then blue: the PATCH reached it
    assert last_b[2] > 150 and last_b[0] < 80


def test_errors_page_metrics_and_delete_through_the_ingress(ray_server):
    h = ray_server
    r = h.post("/api/streams", json={"prompt": "a blu ball"})
    assert r.status_code == 422 and "'blu'" in r.json()["error"]
    r = h.get("/api/streams/r1-nope")
    assert r.status_code == 404 and r.headers["x-t2v-replica"] == "1"
    assert "no stream 'r1-nope'" in r.json()["error"]
    assert h.get("/api/streams/nope").status_code == 404
    r = h.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert h.get("/static/app.js").status_code == 200
    # a pending stream deleted on its replica
    info = h.post("/api/streams", json={"prompt": RED, "size": 64}).json()
    r = h.delete(f"/api/streams/{info['id']}")
    assert r.status_code == 204 and r.headers["x-t2v-replica"] == info["id"][1]
    assert h.get(f"/api/streams/{info['id']}").status_code == 404
    # a browser transport through the proxy; the reader leaving frees the stream on its
    # replica (Ray Serve cancels the streaming call)
    info = h.post("/api/streams", json={"prompt": RED, "size": 64}).json()
    with h.stream("GET", info["video_url"], params={"format": "mjpeg"}) as v:
        assert v.headers["content-type"].startswith("multipart/x-mixed-replace")
        chunks, got = v.iter_raw(), b""      # (kept open: leaving the loop would hang up)
        while got.count(b"\xff\xd9") < 2:       # two whole JPEGs
            got += next(chunks)
        assert h.get(f"/api/streams/{info['id']}").json()["viewers"] == 1
    text = h.get("/metrics").text
    assert 't2v_rt_active_streams{replica="0"}' in text
    assert 't2v_rt_active_streams{replica="1"}' in text
    families = [x.split()[2] for x in text.splitlines() if x.startswith("# TYPE")]
    assert len(families) == len(set(families))         # one family each, samples together
    deadline = time.monotonic() + 2
    while h.get(f"/api/streams/{info['id']}").status_code != 404:
        assert time.monotonic() < deadline, "the stream is still open 2 s after its reader left"
        time.sleep(0.05)


def _tracebacks(err: str) -> list[str]:
    """The final exception line of each traceback in ``err``. Ray prefixes every line a
    replica logs with ``(ServeReplica:... pid=N)``, so a traceback is followed through the
    lines with its own prefix, interleaved or not with other processes' lines."""
    lines, ends = err.splitlines(), []
    for i, line in enumerate(lines):
        at = line.find("Traceback (most recent call last)")
        if at < 0:
            continue
        prefix, end = line[:at], "(unfinished)"
        for later in lines[i + 1:]:
            if later.startswith(prefix) and later[len(prefix):][:1] not in (" ", ""):
                end = later[len(prefix):]
                break
        ends.append(end)
    return ends


def test_tracebacks_are_followed_to_their_exception_line():
    err = ("(A pid=1) Traceback (most recent call last)\n(B pid=2) ready\n"
           "(A pid=1)   File \"x.py\", line 1\n(A pid=1) ray.exceptions.TaskCancelledError: "
           "Task: 12 was cancelled.\nTraceback (most recent call last)\n  File \"y\"\n"
           "KeyError: 'k'\n")
    assert _tracebacks(err) == ["ray.exceptions.TaskCancelledError: Task: 12 was cancelled.",
                                "KeyError: 'k'"]


def test_sigterm_stops_ray_serve_cleanly(ray_server):
    proc = ray_server.proc
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(60)
    err = "".join(ray_server.lines)
    assert rc == 0, err[-3000:]
    assert "stopping" in err, err[-3000:]
    # Nothing fails on the way down. The one traceback allowed is Ray Serve's own log of the
    # streaming call it cancels when a reader leaves (the test above hangs up an MJPEG
    # reader): its ingress replica sometimes logs that TaskCancelledError with a traceback,
    # whose lines may reach this stderr late, after the SIGTERM.
    failed = [e for e in _tracebacks(err) if not e.startswith("ray.exceptions.TaskCancelledError")]
    assert not failed, err[-3000:]


def test_build_app_is_a_ray_serve_config_target():
    from t2v_rt.serve.ray_app import build_app, merge_metrics

    app = build_app({"replicas": 3})
    assert type(app).__name__ == "Application"
    with pytest.raises(ValueError, match="at least 1"):
        build_app({"replicas": 0})
    text = merge_metrics([(0, "# HELP x a\n# TYPE x gauge\nx 1\n# TYPE h histogram\n"
                              'h_bucket{le="1"} 2\nh_count 2\n'),
                          (1, "# HELP x a\n# TYPE x gauge\nx 3\n")])
    assert text.splitlines() == ["# HELP x a", "# TYPE x gauge", 'x{replica="0"} 1',
                                 'x{replica="1"} 3', "# TYPE h histogram",
                                 'h_bucket{replica="0",le="1"} 2', 'h_count{replica="0"} 2']
    json.dumps(text)
