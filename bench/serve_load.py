"""`t2v-rt serve` under load: how many live streams one server keeps in real time, against the
same number of separate `t2v-rt stream` processes side by side, in the same run.

    python bench/serve_load.py [--seconds 60] [--size 256] [--fps 30] [--n 4,6,8,10,12,14,16]
                               [--no-baseline] [--cycles 1000] [--first-byte 10]

Over loopback, with the bundled model, every client a real HTTP reader of the default
container (Matroska, one cluster per frame):

1. **first byte**: with the server warm, ``POST /api/streams`` -> ``GET video_url`` -> the first
   byte, ``--first-byte`` times (target: <= 0.5 s);
2. **load**: for each N of ``--n`` (ascending, until one fails), N clients at once, each
   ``POST`` (its own prompt and seed) and reading its stream for ``--seconds``. A frame is late
   when its cluster arrives more than one frame period after the reader's clock says
   (anchored at its first frame, as a player's is): the same rule as the server's
   ``t2v_rt_late_frames_total``. N passes with < 1 % late frames and every stream admitted;
   reported: late %, frames, p50/p99 of the per-frame latency (the server's histogram: batch
   start to bytes ready), p50/p99 of each frame's arrival against its schedule, the server's
   CPU use (cores), batch sizes;
3. **baseline**: the same N as separate ``t2v-rt stream PROMPT --size S --fps F --seconds T``
   processes side by side, read the same way (stdout pipes), with their CPU use;
4. **cycles**: ``--cycles`` connect / disconnect cycles (POST, GET, first bytes, close), the
   server's RSS after a tenth of them and at the end (memory flat), and the streams left (0).

Target (issue #17, the 2-core CPU): the largest N with < 1 % late frames >= 8 at 256 x 256,
30 fps, 60 s. Writes bench/results/serve_load-{cpu,gpu}.json. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, write_result  # noqa: E402

from t2v_rt.serve.process import ServerProcess  # noqa: E402

CLUSTER = b"\x1f\x43\xb6\x75"       # Matroska Cluster element ID: one per frame here
COLOURS = ("red", "green", "blue", "yellow", "cyan", "magenta", "orange")
MOTIONS = ("moving left and right", "moving up and down", "moving in a circle",
           "moving diagonally")
TICKS = os.sysconf("SC_CLK_TCK")


def prompt(i: int) -> str:
    return (f"a large {COLOURS[i % len(COLOURS)]} circle {MOTIONS[i % len(MOTIONS)]} slowly "
            "on a black background")


# --- the server ------------------------------------------------------------------------------

class Server(ServerProcess):
    """``t2v-rt serve`` (t2v_rt.serve.process) with its CPU time and memory, from /proc."""

    def __init__(self, max_streams: int):
        try:
            super().__init__("--max-streams", str(max_streams), cwd=ROOT, start_timeout=120)
        except RuntimeError as e:
            raise SystemExit(str(e)) from None

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
        return float("nan")


async def request(host: str, port: int, method: str, path: str, body: dict | None = None):
    """(status, headers, parsed JSON or text) of one HTTP/1.1 request."""
    reader, writer = await asyncio.open_connection(host, port)
    data = json.dumps(body).encode() if body is not None else b""
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                 .encode() + data)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        out, rest = b"", payload
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        payload = out
    try:
        return status, headers, json.loads(payload)
    except ValueError:
        return status, headers, payload.decode(errors="replace")


async def frame_arrivals(reader: asyncio.StreamReader, stop_after: float | None = None,
                         first_byte: list | None = None) -> list[float]:
    """Arrival time (monotonic) of each Matroska cluster (= frame) on ``reader``."""
    arrivals, tail = [], b""
    end = None if stop_after is None else time.monotonic() + stop_after
    while True:
        chunk = await reader.read(65536)
        now = time.monotonic()
        if not chunk:
            return arrivals
        if first_byte is not None and not first_byte:
            first_byte.append(now)
        buf = tail + chunk
        arrivals += [now] * buf.count(CLUSTER)
        tail = buf[-3:]
        if end is not None and now > end:
            return arrivals


async def open_video(host: str, port: int, path: str):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, reader, writer


def lateness(arrivals: list[float], fps: float) -> tuple[int, list[float]]:
    """(late frames, each frame's arrival minus its schedule, s) against a reader clock
    anchored at the first frame, one period of slack (the server's rule)."""
    if not arrivals:
        return 0, []
    period = 1 / fps
    offsets = [a - (arrivals[0] + k * period) for k, a in enumerate(arrivals)]
    return sum(o > period for o in offsets), offsets


def quantile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def metrics(server: Server) -> dict:
    status, _, text = asyncio.run(request(server.host, server.port, "GET", "/metrics"))
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def hist_quantile(before: dict, after: dict, name: str, q: float) -> float:
    """q-quantile (upper bucket bound) of histogram ``name`` between two scrapes."""
    buckets = []
    for key, v in after.items():
        m = re.fullmatch(rf'{name}_bucket\{{le="([^"]+)"\}}', key)
        if m:
            buckets.append((float(m.group(1)), v - before.get(key, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    for bound, cum in buckets:
        if total and cum >= q * total:
            return bound
    return float("nan")


# --- the runs --------------------------------------------------------------------------------

async def first_bytes(server: Server, n: int, size: int, fps: float) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.monotonic()
        status, _, info = await request(server.host, server.port, "POST", "/api/streams",
                                        {"prompt": prompt(i), "seed": i, "size": size, "fps": fps})
        if status != 201:
            raise SystemExit(f"POST failed: {status} {info}")
        status, reader, writer = await open_video(server.host, server.port,
                                                  f"/api/streams/{info['id']}/video")
        await reader.read(1)
        out.append(time.monotonic() - t0)
        writer.close()
        await asyncio.sleep(0.3)
    return out


async def serve_clients(server: Server, n: int, seconds: float, size: int, fps: float) -> dict:
    async def client(i: int):
        status, _, info = await request(server.host, server.port, "POST", "/api/streams",
                                        {"prompt": prompt(i), "seed": i, "size": size,
                                         "fps": fps, "seconds": seconds})
        if status != 201:
            return {"admitted": False, "status": status, "error": info.get("error")}
        status, reader, writer = await open_video(server.host, server.port,
                                                  f"/api/streams/{info['id']}/video")
        arrivals = await frame_arrivals(reader)
        writer.close()
        return {"admitted": True, "arrivals": arrivals}

    return await _gather(client, n)


async def stream_processes(n: int, seconds: float, size: int, fps: float) -> list[dict]:
    async def client(i: int):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "t2v_rt", "stream", prompt(i), "--seed", str(i), "--size",
            str(size), "--fps", str(fps), "--seconds", str(seconds), cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        arrivals = await frame_arrivals(proc.stdout)
        await proc.wait()
        return {"admitted": proc.returncode == 0, "arrivals": arrivals}

    return await _gather(client, n)


async def _gather(client, n: int) -> list[dict]:
    return list(await asyncio.gather(*(client(i) for i in range(n))))


def summarise(results: list[dict], fps: float, seconds: float) -> dict:
    admitted = [r for r in results if r["admitted"]]
    late, frames, offsets = 0, 0, []
    for r in admitted:
        k, off = lateness(r["arrivals"], fps)
        late += k
        frames += len(r["arrivals"])
        offsets += off
    expected = round(seconds * fps) * len(results)
    return {"clients": len(results), "admitted": len(admitted), "frames": frames,
            "frames_expected": expected, "late_frames": late,
            "late_pct": 100 * late / frames if frames else 100.0,
            "arrival_vs_schedule_p50_ms": 1e3 * quantile(offsets, 0.5),
            "arrival_vs_schedule_p99_ms": 1e3 * quantile(offsets, 0.99),
            "refusals": [r.get("error") for r in results if not r["admitted"]][:3]}


def run_serve(server: Server, n: int, args) -> dict:
    before, cpu0, t0 = metrics(server), server.cpu_s(), time.monotonic()
    results = asyncio.run(serve_clients(server, n, args.seconds, args.size, args.fps))
    wall = time.monotonic() - t0
    cpu = server.cpu_s() - cpu0
    after = metrics(server)
    s = summarise(results, args.fps, args.seconds)
    sent = after["t2v_rt_frames_sent_total"] - before["t2v_rt_frames_sent_total"]
    batches = after["t2v_rt_batch_size_count"] - before["t2v_rt_batch_size_count"]
    frames = after["t2v_rt_batch_size_sum"] - before["t2v_rt_batch_size_sum"]
    s.update({
        "server_cpu_cores": cpu / wall,
        "server_late_frames": after["t2v_rt_late_frames_total"] - before["t2v_rt_late_frames_total"],
        "server_dropped_frames": (after["t2v_rt_dropped_frames_total"]
                                  - before["t2v_rt_dropped_frames_total"]),
        "server_frames_sent": sent,
        "frame_latency_p50_ms": 1e3 * hist_quantile(before, after, "t2v_rt_frame_latency_seconds", 0.5),
        "frame_latency_p99_ms": 1e3 * hist_quantile(before, after, "t2v_rt_frame_latency_seconds", 0.99),
        "mean_batch": frames / batches if batches else float("nan"),
    })
    s["passes"] = s["admitted"] == n and s["late_pct"] < 1.0 and \
        s["frames"] >= 0.97 * s["frames_expected"]
    return s


def run_processes(n: int, args) -> dict:
    ru0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    results = asyncio.run(stream_processes(n, args.seconds, args.size, args.fps))
    wall = time.monotonic() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    s = summarise(results, args.fps, args.seconds)
    s["cpu_cores"] = (ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime) / wall
    s["passes"] = s["admitted"] == n and s["late_pct"] < 1.0 and \
        s["frames"] >= 0.97 * s["frames_expected"]
    return s


async def cycles(server: Server, count: int, size: int) -> dict:
    rss = []
    t0 = time.monotonic()
    for i in range(count):
        if i == count // 10:
            rss.append(server.rss_mb())
        status, _, info = await request(server.host, server.port, "POST", "/api/streams",
                                        {"prompt": prompt(i), "seed": i, "size": size})
        if status != 201:
            await asyncio.sleep(0.5)
            continue
        status, reader, writer = await open_video(server.host, server.port,
                                                  f"/api/streams/{info['id']}/video")
        await reader.read(1000)
        writer.close()
    await asyncio.sleep(1.0)
    rss.append(server.rss_mb())
    _, _, health = await request(server.host, server.port, "GET", "/api/health")
    return {"cycles": count, "seconds": time.monotonic() - t0,
            "rss_mb_after_tenth": rss[0], "rss_mb_end": rss[-1],
            "rss_growth_mb": rss[-1] - rss[0], "streams_left": health["streams"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--fps", type=float, default=30)
    ap.add_argument("--n", default="4,6,8,10,12,14,16", help="client counts, ascending")
    ap.add_argument("--no-baseline", dest="baseline", action="store_false")
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--first-byte", type=int, default=10)
    args = ap.parse_args()
    ns = [int(x) for x in args.n.split(",")]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    server = Server(max_streams=max(ns) + 8)
    try:
        fb = asyncio.run(first_bytes(server, args.first_byte, args.size, args.fps))
        log(f"POST -> first video byte: median {1e3 * statistics.median(fb):.0f} ms "
            f"(max {1e3 * max(fb):.0f} ms)")
        serve_runs, proc_runs = [], []
        for n in ns:
            s = run_serve(server, n, args)
            serve_runs.append({"n": n, **s})
            log(f"serve  N={n:3d}: {s['late_pct']:.2f} % late, {s['frames']}/{s['frames_expected']} "
                f"frames, latency p50/p99 {s['frame_latency_p50_ms']:.1f}/"
                f"{s['frame_latency_p99_ms']:.1f} ms, CPU {s['server_cpu_cores']:.2f} cores, "
                f"batch {s['mean_batch']:.1f}{'' if s['passes'] else '  FAIL'}")
            if args.baseline:
                p = run_processes(n, args)
                proc_runs.append({"n": n, **p})
                log(f"stream N={n:3d}: {p['late_pct']:.2f} % late, {p['frames']}/"
                    f"{p['frames_expected']} frames, arrival p50/p99 "
                    f"{p['arrival_vs_schedule_p50_ms']:.1f}/{p['arrival_vs_schedule_p99_ms']:.1f}"
                    f" ms, CPU {p['cpu_cores']:.2f} cores{'' if p['passes'] else '  FAIL'}")
            if not s["passes"] and (not args.baseline or not proc_runs[-1]["passes"]):
                break
        cyc = asyncio.run(cycles(server, args.cycles, 64)) if args.cycles else None
        if cyc:
            log(f"{cyc['cycles']} connect/disconnect cycles: RSS {cyc['rss_mb_after_tenth']:.0f} "
                f"-> {cyc['rss_mb_end']:.0f} MB, {cyc['streams_left']} streams left")
    finally:
        server.stop()
    best = max((r["n"] for r in serve_runs if r["passes"]), default=0)
    best_proc = max((r["n"] for r in proc_runs if r["passes"]), default=None)
    path = write_result("serve_load", {
        "settings": {"seconds": args.seconds, "size": args.size, "fps": args.fps, "n": ns,
                     "container": "matroska", "late": "arrival > first arrival + k/fps + 1/fps"},
        "first_byte_s": {"median": statistics.median(fb), "max": max(fb), "runs": fb},
        "serve": serve_runs, "stream_processes": proc_runs, "cycles": cyc,
        "largest_n_serve": best, "largest_n_stream_processes": best_proc,
        "targets": {"largest_n": 8, "first_byte_s": 0.5},
        "meets_targets": best >= 8 and statistics.median(fb) <= 0.5,
        "server_log": "".join(server.lines)[-4000:],
    })
    log(f"largest N with < 1 % late: serve {best}, separate stream processes {best_proc} -> {path}")


if __name__ == "__main__":
    main()
