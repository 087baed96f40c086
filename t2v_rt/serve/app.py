"""The HTTP API (FastAPI on uvicorn): streams made, played, changed and closed over HTTP.

    POST   /api/streams              {prompt, seed?, fps?, size?, frames?, seconds?} -> 201 {id, video_url, ...}
    GET    /api/streams              the streams playing
    GET    /api/streams/{id}         one stream
    GET    /api/streams/{id}/video   the live video: H.264 in Matroska (?format=mpegts|nut),
                                     chunked; for browsers ?format=fmp4 (MSE) or mjpeg (<img>)
    GET    /                         the browser page (t2v_rt/serve/static)
    PATCH  /api/streams/{id}         {prompt, morph_seconds?}: the picture morphs to the new prompt
    DELETE /api/streams/{id}         -> 204; a reader gets the container's end
    GET    /api/health               status, streams, the measured capacity
    GET    /metrics                  Prometheus text

Errors are JSON ``{"error": "<one line>"}`` in the CLI's words: 400 unreadable JSON, 422 bad
values (a prompt the model cannot read gets its own message), 404 unknown stream, 410 ended,
503 + Retry-After at capacity or while shutting down. The OpenAPI schema is at
``/openapi.json`` (``/docs`` shows it).

Only this module and :func:`serve` import FastAPI and uvicorn (``pip install 't2v-rt[serve]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from t2v_rt.errors import T2VError, UsageError
from t2v_rt.serve.metrics import CONTENT_TYPE
from t2v_rt.serve.scheduler import Scheduler
from t2v_rt.serve.session import CONTAINERS, ContainerViewer, StreamSpec
from t2v_rt.serve.transports import TRANSPORTS, make_viewer

STATIC = Path(__file__).parent / "static"
VIDEO_FORMATS = {**CONTAINERS, **TRANSPORTS}

DEFAULT_MORPH_S = 1.0
MAX_MORPH_S = 60.0


class StreamRequest(BaseModel):
    """A new stream. Values are checked with the command line's rules and words."""

    prompt: str = Field(description='what to show, e.g. "a large red circle moving left and right slowly"')
    seed: int | None = Field(None, description="per-video randomness (default 0)")
    fps: float | str | None = Field(None, description="frames per second, in (0, 240] "
                                    "(default: the model's); '30000/1001' works")
    size: int | None = Field(None, description="output side in pixels, even, 16 to 2048 "
                             "(default 256)")
    frames: int | None = Field(None, description="end after this many frames (default: never)")
    seconds: float | None = Field(None, description="end after this many seconds of video")


class PromptChange(BaseModel):
    prompt: str = Field(description="the new prompt")
    morph_seconds: float | None = Field(None, description="how long the picture takes to morph "
                                        f"into the new prompt (default {DEFAULT_MORPH_S:g} s)")


class StreamInfo(BaseModel):
    id: str
    video_url: str
    prompt: str
    seed: int
    fps: float
    fps_exact: str
    size: int
    frames: int | None
    state: str
    frames_generated: int
    frames_skipped: int
    frames_dropped: int
    viewers: int
    encoders: list[str] = Field(default_factory=list,
                                description="the encoder of each reader attached (x264, nvenc, "
                                            "mjpeg): nvenc where the server encodes on the GPU "
                                            "and the reader's NVENC session opened")


def _arg(name: str, parse, value: Any):
    """``value`` through the CLI's argument type ``parse``, its message as a UsageError."""
    try:
        return parse(str(value))
    except (argparse.ArgumentTypeError, ValueError) as e:
        msg = str(e)
        raise UsageError(msg if msg.startswith(f"--{name}") else f"{name} {msg}") from None


def _spec(req: StreamRequest, cfg) -> StreamSpec:
    from t2v_rt.cli import _count, _fps, _seconds, _seed, _size

    cfg.front_end().check(req.prompt)
    fps = cfg.default_fps if req.fps is None else _arg("fps", _fps, req.fps)
    size = 256 if req.size is None else _arg("size", _size, req.size)
    seed = 0 if req.seed is None else _arg("seed", _seed, req.seed)
    if req.frames is not None and req.seconds is not None:
        raise UsageError("give frames or seconds, not both")
    frames = None if req.frames is None else _arg("frames", _count, req.frames)
    if req.seconds is not None:
        frames = max(1, round(_arg("seconds", _seconds, req.seconds) * fps))
    return StreamSpec(prompt=req.prompt, seed=seed, fps=Fraction(fps), size=size, frames=frames)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if not errors:
        return 422, "invalid request"
    e = errors[0]
    if e.get("type") == "json_invalid":
        return 400, f"the request body is not valid JSON ({e.get('ctx', {}).get('error', 'parse error')})"
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    where = ".".join(loc) or "body"
    if e.get("type") == "missing":
        return 422, f"{where} is required"
    if e.get("type") in ("model_attributes_type", "dict_type"):
        return 400, "the request body must be a JSON object"
    return 422, f"{where}: {e.get('msg', 'invalid')}"


def create_app(scheduler: Scheduler, log=None) -> FastAPI:
    """The FastAPI app over a started :class:`Scheduler`."""
    from t2v_rt import __version__

    app = FastAPI(title="t2v-rt", version=__version__,
                  description="Real-time text-to-video: live streams over HTTP.")
    cfg = scheduler.backend.config
    app.state.scheduler = scheduler

    @app.exception_handler(T2VError)
    async def _t2v_error(request: Request, exc: T2VError):
        status = getattr(exc, "status", None) or (422 if isinstance(exc, UsageError) else 503)
        headers = {"Retry-After": str(exc.retry_after)} if hasattr(exc, "retry_after") else None
        return _error(status, str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        status, message = _validation_message(exc)
        return _error(status, message)

    def info(request: Request, session) -> dict:
        url = str(request.url_for("stream_video", sid=session.id))
        return {**session.info(), "video_url": url}

    @app.post("/api/streams", status_code=201, response_model=StreamInfo,
              responses={422: {"description": "bad values"}, 503: {"description": "at capacity"}})
    async def create_stream(req: StreamRequest, request: Request):
        """Start a stream; play it from ``video_url`` (it starts when a reader connects)."""
        spec = _spec(req, cfg)
        session = await asyncio.wrap_future(scheduler.open(spec))
        if log:
            log(f"stream {session.id}: '{spec.prompt}' seed {spec.seed}, {spec.size}x{spec.size} "
                f"@ {float(spec.fps):g} fps")
        return info(request, session)

    @app.get("/api/streams", response_model=list[StreamInfo])
    async def list_streams(request: Request):
        return [info(request, s) for s in list(scheduler.sessions.values())]

    @app.get("/api/streams/{sid}", response_model=StreamInfo)
    async def get_stream(sid: str, request: Request):
        return info(request, scheduler.get(sid))

    @app.patch("/api/streams/{sid}", response_model=StreamInfo)
    async def change_prompt(sid: str, change: PromptChange, request: Request):
        """Change the prompt while the stream plays: the picture morphs to the new one over
        ``morph_seconds``, with no gap and no jump in time. A bad prompt changes nothing."""
        morph = DEFAULT_MORPH_S if change.morph_seconds is None else change.morph_seconds
        if not 0 <= morph <= MAX_MORPH_S:
            raise UsageError(f"morph_seconds must be in [0, {MAX_MORPH_S:g}], got {morph:g}")
        session = await asyncio.wrap_future(scheduler.set_prompt(sid, change.prompt, morph))
        if log:
            log(f"stream {sid}: prompt now '{change.prompt}' (morph {morph:g} s)")
        return info(request, session)

    @app.delete("/api/streams/{sid}", status_code=204)
    async def delete_stream(sid: str):
        scheduler.close_stream(sid)
        return Response(status_code=204)

    @app.get("/api/streams/{sid}/video", name="stream_video",
             responses={200: {"content": {t: {} for t in VIDEO_FORMATS.values()},
                              "description": "the live video, chunked, until the stream ends"}})
    async def stream_video(sid: str, format: str = "matroska"):
        """The live stream over plain HTTP (``ffplay URL`` plays it): H.264 in a streamable
        container, one frame per cluster/packet, in real time from the moment you connect.
        For browsers: ``fmp4`` (fragmented MP4 for Media Source Extensions) and ``mjpeg``
        (``multipart/x-mixed-replace`` JPEGs for an ``<img>``)."""
        if format not in VIDEO_FORMATS:
            raise UsageError(f"unknown format '{format[:20]}'; choose one of: "
                             f"{', '.join(VIDEO_FORMATS)}")
        session = scheduler.get(sid)
        loop = asyncio.get_running_loop()
        if format in TRANSPORTS:
            viewer = make_viewer(format, session, scheduler.pool, scheduler, loop,
                                 encoder=scheduler.encoder)
        else:
            viewer = ContainerViewer(session, scheduler.pool, scheduler, loop, fmt=format,
                                     encoder=scheduler.encoder)
        try:
            scheduler.attach(session, viewer)
        except BaseException:
            viewer.abort()          # closes its encoder on the pool
            raise
        return _VideoResponse(viewer, scheduler, session)

    @app.get("/api/health")
    async def health():
        return {"status": "draining" if scheduler.draining else "ok",
                "streams": len(scheduler.sessions),
                "viewers": sum(len(s.viewers) for s in list(scheduler.sessions.values())),
                "max_streams": scheduler.max_streams, "backend": scheduler.backend.describe(),
                "encoder": scheduler.encoder,
                "load": round(scheduler.load(), 3), "capacity": scheduler.capacity.describe()}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics():
        return PlainTextResponse(scheduler.registry.render(), media_type=CONTENT_TYPE)

    add_page(app)
    return app


def add_page(app: FastAPI) -> None:
    """The browser page: ``/`` and its files under ``/static`` (t2v_rt/serve/static)."""

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


class _VideoResponse(StreamingResponse):
    """The viewer's bytes as a chunked response; however it ends (stream over, DELETE,
    client gone, server draining), the viewer is detached and, if it was the last, its
    stream freed."""

    def __init__(self, viewer: ContainerViewer, scheduler: Scheduler, session):
        self.viewer, self.scheduler, self.session = viewer, scheduler, session

        async def body():
            while (data := await viewer.channel.read()) is not None:
                yield data

        super().__init__(body(), media_type=viewer.media_type,
                         headers={"Cache-Control": "no-store", "X-Stream-Id": session.id})

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.scheduler.detach(self.session, self.viewer)


def _log_config() -> dict:
    """uvicorn's logs on stderr only (its default sends access lines to stdout)."""
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "t2v-rt serve: %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                                "stream": "ext://sys.stderr"}},
        "loggers": {"uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
                    "uvicorn.error": {"level": "WARNING"},
                    "uvicorn.access": {"handlers": ["stderr"], "level": "WARNING",
                                       "propagate": False}},
    }


def _listen(host: str, port: int):
    """The listening socket, bound here so that a taken port or a bad address is one line."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another "
                         "--host or --port") from None
    sock.set_inheritable(True)
    return sock


def serve(host: str, port: int, backend, max_streams: int, log, margin: float = 0.2,
          connect_timeout: float = 30.0, encoder: str = "auto") -> int:
    """Run the server until SIGINT/SIGTERM: then stop admitting, end every stream cleanly
    (readers get the container's end), and exit. ``encoder``: ``auto``, ``x264`` or ``nvenc``
    (:func:`~t2v_rt.serve.session.serve_encoder`; one that cannot run here is refused before
    the port is taken)."""
    import uvicorn

    from t2v_rt.serve.session import serve_encoder

    encoder = serve_encoder(encoder, backend.on_cuda, log)
    sock = _listen(host, port)
    scheduler = Scheduler(backend, max_streams=max_streams, margin=margin,
                          connect_timeout=connect_timeout, log=log, encoder=encoder)
    measured = scheduler.calibrate()
    scheduler.start()
    app = create_app(scheduler, log)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if not scheduler.draining:
                log("stopping: ending every stream cleanly")
                scheduler.drain()
            super().handle_exit(sig, frame)
            # a drain is this command's normal end (exit 0): uvicorn would raise the signal
            # again once it has stopped
            self._captured_signals.clear()

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started and self.servers:
                bound = self.servers[0].sockets[0].getsockname()
                cap = scheduler.capacity.describe()
                log(f"serving http://{bound[0]}:{bound[1]} | {backend.describe()} | "
                    f"encoder {encoder} | "
                    f"generator {measured['generator_ms_per_frame_b8']:.2f} ms/frame, x264 "
                    f"{measured['x264_ms_cpu_per_frame_256']:.2f} ms/frame at 256 | capacity "
                    f"~{cap['capacity_fps_at_256']:g} frames/s at 256x256 on {cap['cores']} cores "
                    f"| at most {max_streams} streams")

    config = uvicorn.Config(app, host=host, port=port, log_config=_log_config(),
                            access_log=False, timeout_graceful_shutdown=5, lifespan="off")
    server = _Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        scheduler.stop()
        sock.close()
    log("stopped")
    return 0 if server.started else 2
