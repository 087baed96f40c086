"""``t2v-rt serve --ray``: t2v-rt servers on many machines behind Ray Serve's HTTP proxy.

A live stream is state on one process (its generator state, its clock, its viewers'
encoders), so every request for a stream must reach the process that holds it. Ray Serve
routes a request to *any* replica of a deployment (replicas are interchangeable by design;
its custom request-router API is alpha), so each t2v-rt server here is its own deployment of
one replica, ``t2v-rt-0`` ... ``t2v-rt-{N-1}``, and one stateless ingress deployment in front
routes by stream id:

- a replica's stream ids start with ``r{k}-`` (:class:`~t2v_rt.serve.scheduler.Scheduler`'s
  ``id_prefix``), so ``/api/streams/r1-.../...`` (GET, PATCH, DELETE, the video) goes to
  replica 1's handle, whichever machine it is on;
- ``POST /api/streams`` goes to the least loaded replica (each replica's measured load), the
  next one if that one answers 503 at capacity;
- ``GET /api/streams``, ``/api/health`` and ``/metrics`` merge every replica's (metrics get a
  ``replica`` label); anything else (the page, ``/openapi.json``) goes to any replica.

Each replica runs the single-machine app (:func:`t2v_rt.serve.app.create_app`) in-process:
the ingress hands it the HTTP request and streams back what the app sends (a Ray streaming
call, so a video flows chunk by chunk), so the API, its errors and the page are exactly those
of ``t2v-rt serve``. Every answer carries ``X-T2V-Replica: k``.

Run it with ``t2v-rt serve --ray --replicas N`` (a local Ray, or the cluster ``RAY_ADDRESS``
names), or deploy :func:`build_app` with a Ray Serve config file (docs/serving.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

_STREAM_PATH = re.compile(r"^/api/streams/r(\d+)-[^/]*(/.*)?$")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (.*)$")
REPLICA_HEADER = "x-t2v-replica"


def _replica_cpus() -> int | None:
    """The CPUs Ray gave this replica (its capacity model's cores), or None."""
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # noqa: BLE001 - outside Ray
        return None
    return max(1, round(cpus)) if cpus else None


class Replica:
    """One t2v-rt server (backend, scheduler, sessions, the FastAPI app) in a Ray actor."""

    def __init__(self, index: int, model: str | None = None, backend: str = "auto",
                 max_streams: int = 64, margin: float = 0.2, connect_timeout: float = 30.0):
        from t2v_rt.backends import create_backend
        from t2v_rt.serve.app import create_app
        from t2v_rt.serve.capacity import CapacityModel
        from t2v_rt.serve.scheduler import Scheduler

        self.index = index

        def log(msg: str) -> None:
            print(f"t2v-rt serve [replica {index}]: {msg}", file=sys.stderr, flush=True)

        self.backend = create_backend(backend, Path(model) if model else None)
        cores = _replica_cpus()
        capacity = CapacityModel(cores=cores, margin=margin) if cores else None
        self.scheduler = Scheduler(self.backend, max_streams=max_streams, margin=margin,
                                   connect_timeout=connect_timeout, log=log, capacity=capacity,
                                   id_prefix=f"r{index}-")
        self.measured = self.scheduler.calibrate()
        self.scheduler.start()
        self.app = create_app(self.scheduler)
        log(f"ready on pid {os.getpid()}: {self.backend.describe()}, "
            f"{self.scheduler.capacity.cores} cores")

    def load(self) -> tuple[float, int]:
        """(predicted CPU use over the cores, streams): where a new stream goes."""
        return self.scheduler.load(), len(self.scheduler.sessions)

    async def forward(self, req: dict):
        """Run one HTTP request through this replica's app; yields the response's start
        ``{"status", "headers"}``, then its body chunks as the app sends them. Closing the
        generator (the client left) is the app's ``http.disconnect``."""
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": req["method"], "scheme": req["scheme"],
            "path": req["path"], "raw_path": req["path"].encode(), "root_path": "",
            "query_string": req["query"].encode(),
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in req["headers"]],
            "server": tuple(req["server"]) if req["server"] else None,
            "client": tuple(req["client"]) if req["client"] else None,
        }
        out: asyncio.Queue = asyncio.Queue()
        gone = asyncio.Event()
        body_sent = False

        async def receive():
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": req["body"], "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            await out.put(message)

        task = asyncio.create_task(self.app(scope, receive, send))
        task.add_done_callback(lambda _: out.put_nowait(None))
        try:
            while (message := await out.get()) is not None:
                if message["type"] == "http.response.start":
                    yield {"status": message["status"], "replica": self.index,
                           "headers": [(k.decode("latin-1"), v.decode("latin-1"))
                                       for k, v in message.get("headers", [])]}
                elif message["type"] == "http.response.body":
                    if message.get("body"):
                        yield bytes(message["body"])
                    if not message.get("more_body"):
                        break
        finally:
            gone.set()
            if not task.done():
                try:
                    await asyncio.wait_for(task, 5)
                except (asyncio.TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001
                    task.cancel()
            elif not task.cancelled():
                task.exception()        # retrieved: an app error is the app's 500, not ours

    def __del__(self):
        """Ray Serve is stopping this replica: end every stream cleanly, then stop."""
        scheduler = getattr(self, "scheduler", None)
        if scheduler is None:
            return
        scheduler.drain()
        scheduler.stop()
        self.backend.close()


class Ingress:
    """The stateless front: routes each request to the replica that holds its stream."""

    def __init__(self, *replicas: DeploymentHandle):
        self.replicas = list(replicas)
        self._next = 0

    async def __call__(self, request: Request) -> Response:
        req = {
            "method": request.method, "scheme": request.url.scheme, "path": request.url.path,
            "query": request.url.query, "headers": list(request.headers.items()),
            "body": await request.body(),
            "server": (request.url.hostname, request.url.port) if request.url.hostname else None,
            "client": tuple(request.client) if request.client else None,
        }
        path, method = req["path"], req["method"]
        m = _STREAM_PATH.match(path)
        if m and int(m.group(1)) < len(self.replicas):
            return await self._proxy(int(m.group(1)), req)
        if path == "/api/streams" and method == "POST":
            return await self._create(req)
        if path == "/api/streams" and method == "GET":
            return await self._merge_lists(req)
        if path == "/api/health" and method == "GET":
            return await self._health(req)
        if path == "/metrics" and method == "GET":
            return await self._metrics(req)
        k, self._next = self._next, (self._next + 1) % len(self.replicas)
        return await self._proxy(k, req)     # the page, the schema, unknown stream ids (404)

    # --- to one replica ----------------------------------------------------------------

    def _call(self, k: int, req: dict):
        return self.replicas[k].options(stream=True).forward.remote(req)

    @staticmethod
    def _headers(start: dict, k: int) -> dict:
        headers = {name: value for name, value in start["headers"]
                   if name.lower() not in ("content-length", "transfer-encoding")}
        headers[REPLICA_HEADER] = str(k)
        return headers

    async def _collect(self, k: int, req: dict) -> tuple[dict, bytes]:
        gen = self._call(k, req)
        start = await gen.__anext__()
        body = b"".join([chunk async for chunk in gen])
        return start, body

    async def _proxy(self, k: int, req: dict) -> Response:
        gen = self._call(k, req)
        try:
            start = await gen.__anext__()
        except StopAsyncIteration:
            return JSONResponse({"error": f"replica {k} gave no answer"}, status_code=502)
        except Exception as e:  # noqa: BLE001 - a replica gone: one line, 503
            return JSONResponse({"error": f"replica {k} is unavailable ({type(e).__name__})"},
                                status_code=503, headers={"Retry-After": "5"})
        headers = self._headers(start, k)
        media_type = headers.pop("content-type", None)
        if not _is_streaming(start):
            body = b"".join([chunk async for chunk in gen])
            return Response(body, status_code=start["status"], headers=headers,
                            media_type=media_type)

        async def body():
            finished = False
            try:
                async for chunk in gen:
                    yield chunk
                finished = True
            finally:
                if not finished:
                    gen.cancel()          # the client left: the replica's app sees it

        return StreamingResponse(body(), status_code=start["status"], headers=headers,
                                 media_type=media_type)

    # --- across replicas ---------------------------------------------------------------

    async def _create(self, req: dict) -> Response:
        loads = await asyncio.gather(*(h.load.remote() for h in self.replicas),
                                     return_exceptions=True)
        order = sorted((load, k) for k, load in enumerate(loads)
                       if not isinstance(load, BaseException))
        last = None
        for _, k in order:
            start, body = await self._collect(k, req)
            if start["status"] != 503:
                return _plain(start, body, k)
            last = (start, body, k)        # at capacity there: try the next one
        if last is None:
            return JSONResponse({"error": "no replica is available"}, status_code=503,
                                headers={"Retry-After": "5"})
        return _plain(*last)

    async def _each(self, req: dict) -> list[tuple[int, dict, bytes]]:
        answers = await asyncio.gather(*(self._collect(k, req) for k in range(len(self.replicas))),
                                       return_exceptions=True)
        return [(k, *a) for k, a in enumerate(answers) if not isinstance(a, BaseException)]

    async def _merge_lists(self, req: dict) -> Response:
        streams = []
        for _, start, body in await self._each(req):
            if start["status"] == 200:
                streams += json.loads(body)
        return JSONResponse(streams)

    async def _health(self, req: dict) -> Response:
        replicas = [{"replica": k, **json.loads(body)} for k, _, body in await self._each(req)]
        up = len(replicas)
        healthy = up == len(self.replicas) and all(r["status"] == "ok" for r in replicas)
        return JSONResponse({
            "status": "ok" if healthy else "degraded" if up else "down",
            "replicas_up": up, "replicas": replicas,
            "streams": sum(r["streams"] for r in replicas),
            "viewers": sum(r["viewers"] for r in replicas),
            "max_streams": sum(r["max_streams"] for r in replicas),
        }, status_code=200 if up else 503)

    async def _metrics(self, req: dict) -> Response:
        texts, media_type = [], "text/plain"
        for k, start, body in await self._each(req):
            media_type = dict(start["headers"]).get("content-type", media_type)
            texts.append((k, body.decode()))
        return Response(merge_metrics(texts), media_type=media_type)


def _is_streaming(start: dict) -> bool:
    headers = {k.lower(): v for k, v in start["headers"]}
    return "content-length" not in headers


def _plain(start: dict, body: bytes, k: int) -> Response:
    headers = Ingress._headers(start, k)
    media_type = headers.pop("content-type", None)
    return Response(body, status_code=start["status"], headers=headers, media_type=media_type)


def merge_metrics(texts: list[tuple[int, str]]) -> str:
    """The replicas' Prometheus texts as one: ``replica="k"`` on every sample, each metric's
    HELP/TYPE once and its samples from every replica together (as the format requires)."""
    families: dict[str, dict] = {}
    for k, text in texts:
        family = None
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                family = line.split()[2]
                f = families.setdefault(family, {"head": [], "samples": []})
                if line not in f["head"]:
                    f["head"].append(line)
                continue
            m = _SAMPLE.match(line)
            if not m or line.startswith("#"):
                continue
            labels = m.group(2)[1:-1] if m.group(2) else ""
            labels = f'replica="{k}"' + (f",{labels}" if labels else "")
            name = family if family and m.group(1).startswith(family) else m.group(1)
            families.setdefault(name, {"head": [], "samples": []})["samples"].append(
                f"{m.group(1)}{{{labels}}} {m.group(3)}")
    return "".join("\n".join(f["head"] + f["samples"]) + "\n" for f in families.values())


def build_app(args: dict | None = None):
    """The Ray Serve application: ``args`` {replicas (2), model, backend ("auto"),
    max_streams (64), replica_cpus (1)}. Usable as a Ray Serve config's ``import_path``
    (``t2v_rt.serve.ray_app:build_app``)."""
    args = dict(args or {})
    n = int(args.get("replicas", 2))
    if n < 1:
        raise ValueError(f"replicas must be at least 1, got {n}")
    cpus = float(args.get("replica_cpus", 1))
    many = 10_000      # a live video is one request for as long as it plays
    replica = serve.deployment(Replica, max_ongoing_requests=many,
                               ray_actor_options={"num_cpus": cpus},
                               graceful_shutdown_timeout_s=10)
    handles = [replica.options(name=f"t2v-rt-{k}").bind(
        k, args.get("model"), args.get("backend", "auto"), int(args.get("max_streams", 64)))
        for k in range(n)]
    ingress = serve.deployment(Ingress, name="t2v-rt-ingress", max_ongoing_requests=many,
                               ray_actor_options={"num_cpus": 0})
    return ingress.bind(*handles)


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve_ray(host: str, port: int, replicas: int, model: Path | None, backend: str,
              max_streams: int, log) -> int:
    """Start (or join, with ``RAY_ADDRESS``) Ray, run the app on Ray Serve's proxy at
    host:port, and serve until SIGINT/SIGTERM; then shut Ray Serve down (each replica ends
    its streams first)."""
    import signal
    import threading

    import ray

    if port == 0:
        port = _free_port(host)
    init = {"include_dashboard": False, "logging_level": "WARNING",
            "configure_logging": True, "log_to_driver": True}
    local = not os.environ.get("RAY_ADDRESS")
    if local:
        # room for every replica on this machine, and a small object store (video chunks
        # pass through it only in flight)
        init.update(num_cpus=max(os.cpu_count() or 1, replicas),
                    object_store_memory=256 * 1024 * 1024)
    ray.init(**init)
    try:
        quiet = {"log_level": "WARNING", "enable_access_log": False}
        serve.start(http_options={"host": host, "port": port}, logging_config=quiet)
        serve.run(build_app({"replicas": replicas, "model": str(model) if model else None,
                             "backend": backend, "max_streams": max_streams}),
                  name="t2v-rt", route_prefix="/", blocking=False, logging_config=quiet)
        where = "a local Ray" if local else f"the Ray cluster at {os.environ['RAY_ADDRESS']}"
        log(f"serving http://{host}:{port} | Ray Serve on {where}: {replicas} replica"
            f"{'s' if replicas != 1 else ''} (t2v-rt-0..{replicas - 1}), streams pinned to "
            f"theirs | at most {max_streams} streams per replica")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        log("stopping: ending every stream cleanly")
        serve.shutdown()
    finally:
        ray.shutdown()
    return 0
