"""The viewer's web app (FastAPI): one page, an enhance endpoint and an optional live MJPEG stream.

Routes:

* ``GET /`` the page; ``GET /static/{name}`` its script and style sheet (held in memory, so no
  string from a request is ever used as a path).
* ``GET /api/info`` device, upload limit, whether a live source is configured.
* ``POST /api/enhance?strength=K`` body: the file's bytes, or a ``multipart/form-data`` form with
  one file field (any field name, file name or declared type: the content decides). An image
  (PNG, JPEG, BMP, TIFF, WebP) comes back as PNG; a short clip (MP4/MOV,
  MKV/WebM, AVI) as H.264 MP4. ``X-Enhance-Ms`` is the server's time. Errors: 400 empty, 413 too
  large or too long, 415 unsupported content, 422 unusable image or clip, each with a one-line
  ``detail``.
* ``GET /api/live.mjpg`` the ``--source`` video through the enhancer, ``before | after`` side by
  side, as ``multipart/x-mixed-replace`` JPEG frames; ``GET /api/live/stats`` fps and latency;
  ``PUT /api/live/strength`` (JSON ``{"strength": K}``) the stream's strength.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from importlib import resources

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from endolight.enhancer import Enhancer
from endolight.serve.live import LiveStream, source_frames
from endolight.serve.uploads import (
    IMAGE_TYPES,
    UploadError,
    check_declared_size,
    decode_image,
    encode_png,
    enhance_clip,
    read_upload,
    sniff_video,
)

STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}
# The page loads nothing from elsewhere; blob: holds the images the page itself made.
CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; script-src 'self'; "
       "style-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
BOUNDARY = "endolightframe"


@dataclass(frozen=True)
class ServeConfig:
    """Server settings.

    Attributes:
        max_upload_mb: largest accepted upload, in MB (10**6 bytes).
        source: video file, camera (``/dev/video0``) or stream URL to play live; None: none.
        live_max_side: live frames are shrunk to this longer side before enhancing.
        loop: restart a live video file at its end.
        strength: the page's initial strength.
        workers: enhancements run at once (more requests wait their turn).
        max_clip_seconds: longest accepted video clip.
    """

    max_upload_mb: float = 32.0
    source: str | None = None
    live_max_side: int | None = 720
    loop: bool = True
    strength: float = 1.0
    workers: int = 2
    max_clip_seconds: float = 20.0


class SecurityHeaders:
    """Adds the page's security headers to every reply (plain ASGI: streams pass untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = CSP
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


class StrengthIn(BaseModel):
    strength: float = Field(ge=0.0, le=1.0)


def _static_files() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("endolight") / "serve" / "static"
    return {f.name: (f.read_bytes(), STATIC_TYPES[f.name[f.name.rfind("."):]])
            for f in folder.iterdir() if f.name[f.name.rfind("."):] in STATIC_TYPES}


def create_app(enhancer: Enhancer, config: ServeConfig | None = None) -> FastAPI:
    """The viewer app; every frame it returns was made by ``enhancer``."""
    cfg = config or ServeConfig()
    static = _static_files()
    limit = int(cfg.max_upload_mb * 1e6)
    busy = asyncio.Semaphore(cfg.workers)
    live = (LiveStream(partial(source_frames, cfg.source, cfg.loop), enhancer, cfg.live_max_side,
                       strength=cfg.strength) if cfg.source else None)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if live:
            live.close()

    app = FastAPI(title="endolight viewer", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    app.state.live = live  # the server closes it first on shutdown, ending open streams
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(UploadError)
    async def upload_error(_: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # One line, like every other error: "strength: Input should be less than or equal to 1".
        first = exc.errors()[0]
        return JSONResponse({"detail": f"{first['loc'][-1]}: {first['msg']}"}, status_code=422)

    @app.get("/")
    async def index() -> Response:
        body, media = static["index.html"]
        return Response(body, media_type=media)

    @app.get("/static/{name}")
    async def static_file(name: str) -> Response:
        if name not in static:
            raise HTTPException(404, "not found")
        body, media = static[name]
        return Response(body, media_type=media)

    @app.get("/api/info")
    async def info() -> dict:
        return {"device": str(enhancer.device), "max_upload_bytes": limit, "live": live is not None,
                "strength": cfg.strength, "image_types": sorted(IMAGE_TYPES.values())}

    @app.post("/api/enhance")
    async def enhance(request: Request, strength: float = Query(1.0, ge=0.0, le=1.0)) -> Response:
        check_declared_size(request.headers, limit)
        data = await read_upload(request.headers, request.stream(), limit)
        demuxer = sniff_video(data)
        async with busy:
            if demuxer:
                clip = await run_in_threadpool(enhance_clip, data, demuxer, enhancer, strength,
                                               cfg.max_clip_seconds)
                headers = {"X-Enhance-Ms": f"{1000 * clip.seconds:.1f}", "X-Frames": str(clip.frames),
                           "X-Strength": f"{strength:g}"}
                return FileResponse(clip.path, media_type="video/mp4", headers=headers,
                                    background=BackgroundTask(clip.folder.cleanup))
            frame = await run_in_threadpool(decode_image, data)
            t0 = time.perf_counter()
            out = await run_in_threadpool(enhancer.enhance_array, frame, strength)
            ms = 1000 * (time.perf_counter() - t0)
            png = await run_in_threadpool(encode_png, out)
        h, w = out.shape[:2]
        return Response(png, media_type="image/png",
                        headers={"X-Enhance-Ms": f"{ms:.1f}", "X-Image-Size": f"{w}x{h}",
                                 "X-Strength": f"{strength:g}"})

    def _live() -> LiveStream:
        if live is None:
            raise HTTPException(404, "no live source: start the server with --source FILE|URL|/dev/videoN")
        return live

    @app.get("/api/live.mjpg")
    async def live_mjpeg(frames: int | None = Query(None, ge=1)) -> StreamingResponse:
        stream = _live()

        async def parts() -> AsyncIterator[bytes]:
            # Async, with short waits: when the client goes away Starlette cancels this
            # generator at its next await, the viewer count drops and the worker stops.
            with stream.viewer():
                seq, sent = stream.seq, 0
                while frames is None or sent < frames:
                    try:
                        got = await run_in_threadpool(stream.next_frame, seq)
                    except EOFError:
                        return
                    if got is None:
                        continue
                    seq, jpeg = got
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                    yield head.encode() + jpeg + b"\r\n"
                    sent += 1

        return StreamingResponse(parts(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}")

    @app.get("/api/live/stats")
    def live_stats() -> dict:
        return {**_live().stats(), "strength": _live().strength}

    @app.put("/api/live/strength")
    def live_strength(body: StrengthIn) -> dict:
        _live().set_strength(body.strength)
        return {"strength": body.strength}

    return app
