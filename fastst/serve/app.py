"""The web app of ``fastst serve``: one page, two JSON/PNG endpoints, bounded memory, one inference at a time.

Routes (nothing else is served; no route takes a path from the client):

* ``GET /``, ``GET /static/app.js``, ``GET /static/app.css``: the page, read from the package once;
* ``GET /api/models``: the gallery (what each model file says), the device and the limits;
* ``POST /api/stylize?model=NAME&strength=0..1&preserve_color=0|1&size=PX``: the body is the photo's
  bytes as they are (``fetch(url, {method: "POST", body: file})``, ``curl --data-binary @photo.jpg``);
  the answer is the result as PNG, with its timings in ``X-Fastst-*`` and ``Server-Timing`` headers,
  or ``{"error": "..."}`` with a 4xx/5xx status;
* ``GET /healthz``: ``ok``.

Safety and memory:

* ``model`` only selects a key of the loaded :class:`~fastst.serve.models.ModelSet`.
* The upload is read into memory, never to disk, and refused (413) past ``max_upload_bytes``; nothing
  is written anywhere (no multipart parsing, so no spooled temporary files either).
* An image is checked from its header before it is decoded: more than ``max_pixels`` pixels is refused
  (413; a decompression bomb is a small file that claims a huge image). Not an image: 415. A truncated
  or damaged file: 400. The output's long side is at most ``max_size``.
* Requests are admitted while fewer than ``queue`` are waiting or running (else 503 with
  ``Retry-After``), and decoding, stylizing and encoding run in one worker thread, one request at a
  time, so the memory held is at most ``queue`` uploads plus one decoded image and one inference.
* Any error in one request is answered and logged; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import fastst
from fastst.errors import InferenceError, UsageError, first_line
from fastst.inference.stylizer import DTYPES
from fastst.io.images import _to_rgb
from fastst.serve.models import ModelSet, ServedModel

log = logging.getLogger("fastst.serve")

MIN_SIZE = 32  # px; smaller outputs are not worth looking at
STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
OPTION_NAMES = ("model", "strength", "preserve_color", "size")
_TRUE, _FALSE = ("1", "true", "on", "yes"), ("0", "false", "off", "no", "")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; ``fastst serve`` flags set each (see its ``--help``)."""

    max_upload_bytes: int = 20 * 2**20  # the photo file as uploaded
    max_pixels: int = 50_000_000  # the photo's width x height, read from its header before decoding
    max_size: int = 2048  # the result's long side, px
    default_size: int = 512  # the page's initial output size
    queue: int = 4  # requests admitted at once (one runs, the rest wait); more get 503

    def public(self) -> dict[str, Any]:
        return {**asdict(self), "max_megapixels": self.max_pixels / 1e6, "min_size": MIN_SIZE}


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a one-line message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Options:
    model: str
    strength: float
    preserve_color: bool
    size: int  # long side of the result; 0 keeps the photo's (at most Limits.max_size)


@dataclass(frozen=True)
class Result:
    png: bytes
    width: int
    height: int
    decode_s: float
    stylize_s: float
    encode_s: float


def _quote(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def parse_options(query: Mapping[str, str], models: ModelSet, limits: Limits) -> Options:
    """The checked options of a stylize request; ``RequestError`` (400) names the bad one."""
    unknown = sorted(set(query) - set(OPTION_NAMES))
    if unknown:
        names = ", ".join(map(_quote, unknown))
        raise RequestError(400, f"unknown option(s) {names}; known: {', '.join(OPTION_NAMES)}")
    name = query.get("model", "")
    if not name:
        raise RequestError(400, f"no model chosen; this server has: {', '.join(models)}")
    if name not in models:  # a key lookup: a name can only ever select one of the served models
        raise RequestError(400, f"unknown model {_quote(name)}; this server has: {', '.join(models)}")
    try:
        strength = float(query.get("strength", "1"))
    except ValueError:
        strength = math.nan
    if not 0.0 <= strength <= 1.0:  # also refuses NaN
        raise RequestError(400, f"strength must be a number from 0 to 1, got {_quote(query['strength'])}")
    flag = query.get("preserve_color", "0").lower()
    if flag not in _TRUE + _FALSE:
        raise RequestError(400, f"preserve_color must be 0 or 1, got {_quote(query['preserve_color'])}")
    raw_size = query.get("size", str(limits.default_size))
    try:
        size = int(raw_size)
    except ValueError:
        size = -1
    if size != 0 and not MIN_SIZE <= size <= limits.max_size:
        raise RequestError(
            400,
            f"size must be 0 (the photo's own, at most {limits.max_size}) or {MIN_SIZE} to {limits.max_size} px, "
            f"got {_quote(raw_size)}",
        )
    return Options(name, strength, flag in _TRUE, size)


def decode_image(data: bytes, max_pixels: int, long_side: int | None = None) -> Image.Image:
    """Upload bytes -> 8-bit RGB image, EXIF-rotated; ``RequestError`` for anything unusable.

    The pixel count is checked from the header, before any pixel is decoded. ``long_side``, when the
    result will be smaller than the photo, lets a JPEG decode at a reduced scale (less memory, faster).
    """
    if not data:
        raise RequestError(400, "the upload is empty; choose a photo")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise RequestError(415, "this file is not an image this server can read (use JPEG, PNG, WebP, ...)") from None
    except Image.DecompressionBombError as e:
        raise RequestError(413, f"the image has too many pixels ({first_line(e)})") from None
    except Exception as e:  # a broken header
        raise RequestError(400, f"the image cannot be read ({first_line(e, 200)}); the file may be damaged") from None
    w, h = img.size
    if w * h > max_pixels:
        raise RequestError(
            413,
            f"the image is {w} x {h} = {w * h / 1e6:.0f} megapixels; this server accepts up to "
            f"{max_pixels / 1e6:g} (fastst serve --max-megapixels)",
        )
    if w < 1 or h < 1:
        raise RequestError(400, f"the image is empty ({w} x {h})")
    try:
        if long_side and img.format == "JPEG" and long_side < max(w, h):
            scale = long_side / max(w, h)
            img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))  # DCT scaling, never below that
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except Image.DecompressionBombError as e:
        raise RequestError(413, f"the image has too many pixels ({first_line(e)})") from None
    except Exception as e:  # truncated data, bad chunks, unsupported modes, ...
        raise RequestError(
            400, f"the image cannot be decoded ({first_line(e, 200)}); the file may be truncated or damaged"
        ) from None


def stylize_upload(model: ServedModel, data: bytes, options: Options, limits: Limits) -> Result:
    """Decode, stylize and PNG-encode one upload (runs in the worker thread)."""
    t0 = time.perf_counter()
    img = decode_image(data, limits.max_pixels, options.size or limits.max_size)
    size = options.size or min(max(img.size), limits.max_size)
    t1 = time.perf_counter()
    try:
        out = model.stylizer(img, size=size, strength=options.strength, preserve_color=options.preserve_color)
    except InferenceError as e:
        raise RequestError(400, str(e)) from None
    del img
    t2 = time.perf_counter()
    buf = io.BytesIO()
    out.save(buf, "PNG", compress_level=3)  # level 3: half the time of the default 6, a few % larger
    t3 = time.perf_counter()
    return Result(buf.getvalue(), out.width, out.height, t1 - t0, t2 - t1, t3 - t2)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (checked before and while reading)."""
    too_large = RequestError(
        413, f"the upload is larger than this server's limit of {limit / 2**20:g} MB (fastst serve --max-upload-mb)"
    )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class Server:
    """The app's state: the models, the limits and the one worker thread."""

    def __init__(self, models: ModelSet, limits: Limits) -> None:
        if not models:
            raise UsageError("no models to serve")
        self.models, self.limits = models, limits
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastst-serve")
        self.pending = 0  # requests admitted and not answered; touched only on the event loop
        first = next(iter(models.values()))
        self.device = str(first.stylizer.device)
        self.dtype = {v: k for k, v in DTYPES.items()}[first.stylizer.dtype]  # fp32, bf16, fp16: the flags' words
        package = resources.files("fastst.serve") / "static"
        self.page = (package / "index.html").read_bytes()
        self.static = {name: (package / name).read_bytes() for name in STATIC}

    def info(self) -> dict[str, Any]:
        return {
            "models": self.models.gallery(),
            "device": self.device,
            "dtype": self.dtype,
            "limits": self.limits.public(),
            "version": fastst.__version__,
        }

    async def index(self, request: Request) -> Response:
        headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-store"}
        return Response(self.page, media_type="text/html; charset=utf-8", headers=headers)

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse("not found", status_code=404)
        return Response(self.static[name], media_type=STATIC[name], headers={"Cache-Control": "no-store"})

    async def api_models(self, request: Request) -> Response:
        return JSONResponse(self.info())

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def api_stylize(self, request: Request) -> Response:
        try:
            options = parse_options(request.query_params, self.models, self.limits)
        except RequestError as e:
            return _error(e.status, str(e))
        if self.pending >= self.limits.queue:
            message = f"busy: {self.pending} requests are queued; try again in a moment"
            return _error(503, message, {"Retry-After": "2"})
        self.pending += 1
        try:
            data = await read_body(request, self.limits.max_upload_bytes)
            admitted = time.perf_counter()
            loop = asyncio.get_running_loop()
            model = self.models[options.model]
            result, queued_s = await loop.run_in_executor(self.executor, self._run, model, data, options, admitted)
        except RequestError as e:
            return _error(e.status, str(e))
        except ClientDisconnect:
            return _error(400, "the upload was interrupted")
        except MemoryError:
            return _error(503, "not enough memory for this image at this size; choose a smaller output size")
        except Exception as e:
            if type(e).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch.cuda
                _free_accelerator_memory()
                return _error(503, "the accelerator ran out of memory; choose a smaller output size")
            log.exception("stylize request failed (model %s)", options.model)
            return _error(500, f"the server failed on this image ({type(e).__name__}: {first_line(e, 200)})")
        finally:
            self.pending -= 1
        total_s = queued_s + result.decode_s + result.stylize_s + result.encode_s
        headers = {
            "Cache-Control": "no-store",
            "X-Fastst-Model": options.model,
            "X-Fastst-Width": str(result.width),
            "X-Fastst-Height": str(result.height),
            "X-Fastst-Stylize-Seconds": f"{result.stylize_s:.4f}",
            "X-Fastst-Total-Seconds": f"{total_s:.4f}",
            "X-Fastst-Queue-Seconds": f"{queued_s:.4f}",
            "X-Fastst-Device": self.device,
            "Server-Timing": ", ".join(
                f"{k};dur={v * 1000:.1f}"
                for k, v in (
                    ("queue", queued_s),
                    ("decode", result.decode_s),
                    ("stylize", result.stylize_s),
                    ("encode", result.encode_s),
                )
            ),
        }
        return Response(result.png, media_type="image/png", headers=headers)

    def _run(self, model: ServedModel, data: bytes, options: Options, admitted: float) -> tuple[Result, float]:
        queued_s = time.perf_counter() - admitted
        return stylize_upload(model, data, options, self.limits), queued_s

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _free_accelerator_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def create_app(models: ModelSet, limits: Limits | None = None, allowed_hosts: list[str] | None = None) -> Starlette:
    """The Starlette app serving ``models``. ``allowed_hosts`` (e.g. the loopback names when bound to
    127.0.0.1) refuses requests for other host names: a web page elsewhere cannot reach this server by
    pointing a DNS name at 127.0.0.1 (DNS rebinding)."""
    server = Server(models, limits or Limits())

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        server.close()

    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)] if allowed_hosts else []
    app = Starlette(
        routes=[
            Route("/", server.index),
            Route("/static/{name}", server.static_file),
            Route("/api/models", server.api_models),
            Route("/api/stylize", server.api_stylize, methods=["POST"]),
            Route("/healthz", server.healthz),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.server = server
    return app
