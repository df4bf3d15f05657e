"""The web app of ``fastst serve``: one page, two JSON/image endpoints, bounded memory, one inference at a time.

Routes (nothing else is served; no route takes a path from the client):

* ``GET /``, ``GET /static/app.js``, ``GET /static/app.css``: the page, read from the package once;
* ``GET /api/models``: the gallery (what each model file says: its styles, its backend), the device and the limits;
* ``POST /api/stylize?model=NAME&style=S|mix=a=0.7,b=0.3&strength=0..1&preserve_color=0|1&size=PX&format=png|jpeg``:
  (``&stroke=S`` for a model trained with stroke_scales: its stroke size, within the trained range);
  the body is the photo's bytes as they are (``fetch(url, {method: "POST", body: file})``,
  ``curl --data-binary @photo.jpg``), or ``multipart/form-data`` with a ``photo`` part and an optional
  ``style_image`` part (a painting: required by an arbitrary-style model, which renders it with ``strength``
  interpolating the photo's statistics and the painting's; other models refuse it with 400). The painting
  passes the same checks as the photo (format sniffing, ``max_pixels`` from the header, one upload limit
  for both parts), is decoded at 512 px long side at most (or the model's style size, if larger) and is
  encoded at the model's style size (the size its training resized paintings to; 512 for older files);
  the answer is the result as PNG (or JPEG, for the camera), with its timings in ``X-Fastst-*`` and
  ``Server-Timing`` headers, or ``{"error": "..."}`` with a 4xx/5xx status;
* ``GET /healthz``: ``ok``.

Safety and memory:

* ``model`` only selects a key of the loaded :class:`~fastst.serve.models.ModelSet`.
* ``/api/*`` refuses cross-site requests (403): a ``Sec-Fetch-Site`` other than ``same-origin``/``none``,
  or an ``Origin`` that is not this server's own. Any page the user visits could otherwise drive it.
* The upload is read into memory, never to disk, and refused (413) past ``max_upload_bytes``; it must
  start within ``upload_grace_s`` and keep a minimum rate (408 otherwise), and at most ``max_reading``
  uploads are read at once, apart from the inference queue, so slow clients cannot hold the queue.
* Only JPEG, PNG, WebP and BMP are decoded, recognised by their first bytes before Pillow sees the
  file (415 for anything else: no EPS, PDF, TIFF, ... decoder ever runs on an upload).
* An image is checked from its header before it is decoded: more than ``max_pixels`` pixels is refused
  (413; a decompression bomb is a small file that claims a huge image). A truncated or damaged file:
  400. The output's long side is at most ``max_size`` and 2x the photo's; its pixels at most
  ``max_output_pixels`` (this bounds each request's peak memory; docs/serve.md measures it).
* Requests are admitted while fewer than ``queue`` are waiting or running (else 503 with
  ``Retry-After``), and decoding, stylizing and encoding run in one worker thread, one request at a
  time. A request whose client went away before its turn is skipped.
* Any error in one request is answered and logged; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import fastst
from fastst.common.options import parse_mix
from fastst.errors import UsageError, UserError, first_line
from fastst.serve.models import ModelSet, ServedModel
from fastst.serve.uploads import (
    FORMATS,
    RequestError,
    load_image,
    open_image,
    quoted,
    read_body,
    split_form,
)

log = logging.getLogger("fastst.serve")

MIN_SIZE = 32  # px; smaller outputs are not worth looking at
MAX_UPSCALE = 2  # the output's long side is at most this times the photo's: more invents nothing, costs 4x+
STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
OPTION_NAMES = ("model", "style", "mix", "strength", "preserve_color", "size", "format", "stroke")
_TRUE, _FALSE = ("1", "true", "on", "yes"), ("0", "false", "off", "no", "")
SAME_SITE = ("same-origin", "none")  # Sec-Fetch-Site values of the page itself and of a typed URL / curl


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; ``fastst serve`` flags set each (see its ``--help``)."""

    max_upload_bytes: int = 20 * 2**20  # the photo file as uploaded
    max_pixels: int = 50_000_000  # the photo's width x height, read from its header before decoding
    max_size: int = 2048  # the result's long side, px
    max_output_pixels: int = 1_600_000  # the result's width x height: bounds a request's peak memory (docs/serve.md)
    default_size: int = 512  # the page's initial output size
    queue: int = 4  # requests admitted at once (one runs, the rest wait); more get 503
    max_reading: int = 8  # uploads being received at once (apart from the queue); more get 503
    upload_grace_s: float = 5.0  # an upload's first bytes must come within this, and it may lag this far behind...
    min_upload_rate: int = 64 * 1024  # ... bytes/s on average; slower uploads are cut off with 408

    def public(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "max_megapixels": self.max_pixels / 1e6,
            "max_output_megapixels": self.max_output_pixels / 1e6,
            "max_upscale": MAX_UPSCALE,
            "min_size": MIN_SIZE,
            "formats": list(FORMATS),
        }


class Cancelled(Exception):
    """The client went away before its request's turn; nothing was computed."""


@dataclass(frozen=True)
class Options:
    model: str
    strength: float
    preserve_color: bool
    size: int | None  # long side of the result; 0 keeps the photo's (at most Limits.max_size); None: the default
    style: Any = None  # None, a style name or {name: weight}: as the CLI's --style / --mix
    format: str = "png"  # png | jpeg (the camera: a smaller, faster frame)
    stroke: float | None = None  # a model trained with stroke_scales: its stroke size (None: 1)


@dataclass(frozen=True)
class Result:
    data: bytes
    width: int
    height: int
    decode_s: float
    stylize_s: float
    encode_s: float


def parse_style(query: Mapping[str, str], model: ServedModel) -> Any:
    """``style=NAME`` or ``mix=a=0.7,b=0.3`` (the CLI's spellings), checked against the model's styles."""
    raw_style, raw_mix = query.get("style") or None, query.get("mix") or None
    names = ", ".join(model.style_names)
    if raw_style and raw_mix:
        raise RequestError(400, "give style=NAME or mix=a=0.7,b=0.3, not both")
    choice: Any = raw_style
    if raw_mix:
        try:
            choice = parse_mix(raw_mix)
        except UsageError:
            raise RequestError(
                400,
                f"mix must be NAME=WEIGHT,NAME=WEIGHT with weights >= 0 (e.g. mix=a=0.7,b=0.3), got {quoted(raw_mix)}",
            ) from None
    if choice is None:
        if model.multi_style:
            first = model.style_names[0]
            raise RequestError(
                400,
                f"model {model.name} holds {len(model.style_names)} styles ({names}); choose one with style=NAME "
                f"(e.g. style={first}) or mix them with mix=NAME=WEIGHT,... (e.g. mix={first}=0.5,...)",
            )
        return None
    try:
        model.stylizer.mix(choice)
    except UserError as e:  # UnknownStyleError, InferenceError (weights summing to 0, ...)
        message = first_line(e, 200)
        if isinstance(choice, str) or isinstance(choice, Mapping) and set(choice) - set(model.style_names):
            message = f"unknown style for model {model.name}: {quoted(str(choice))}; its styles: {names}"
        raise RequestError(400, message) from None
    return choice


def parse_options(query: Mapping[str, str], models: ModelSet, limits: Limits) -> Options:
    """The checked options of a stylize request; ``RequestError`` (400) names the bad one."""
    unknown = sorted(set(query) - set(OPTION_NAMES))
    if unknown:
        names = ", ".join(map(quoted, unknown))
        raise RequestError(400, f"unknown option(s) {names}; known: {', '.join(OPTION_NAMES)}")
    name = query.get("model", "")
    if not name:
        raise RequestError(400, f"no model chosen; this server has: {', '.join(models)}")
    if name not in models:  # a key lookup: a name can only ever select one of the served models
        raise RequestError(400, f"unknown model {quoted(name)}; this server has: {', '.join(models)}")
    style = parse_style(query, models[name])
    try:
        strength = float(query.get("strength", "1"))
    except ValueError:
        strength = math.nan
    if not 0.0 <= strength <= 1.0:  # also refuses NaN
        raise RequestError(400, f"strength must be a number from 0 to 1, got {quoted(query['strength'])}")
    flag = query.get("preserve_color", "0").lower()
    if flag not in _TRUE + _FALSE:
        raise RequestError(400, f"preserve_color must be 0 or 1, got {quoted(query['preserve_color'])}")
    raw_size = query.get("size")
    try:
        size = None if raw_size is None else int(raw_size)
    except ValueError:
        size = -1
    if size is not None and size != 0 and not MIN_SIZE <= size <= limits.max_size:
        raise RequestError(
            400,
            f"size must be 0 (the photo's own, at most {limits.max_size}) or {MIN_SIZE} to {limits.max_size} px, "
            f"got {quoted(raw_size)}",
        )
    fmt = query.get("format", "png").lower()
    if fmt not in ("png", "jpeg"):
        raise RequestError(400, f"format must be png or jpeg, got {quoted(query['format'])}")
    return Options(name, strength, flag in _TRUE, size, style, fmt, parse_stroke(query, models[name], style))


def parse_stroke(query: Mapping[str, str], model: ServedModel, style: Any) -> float | None:
    """The ``stroke`` option (a model trained with stroke_scales); ``RequestError`` (400) saying what it takes."""
    raw = query.get("stroke")
    if raw is None or raw == "":
        return None
    try:
        stroke = float(raw)
    except ValueError:
        raise RequestError(400, f"stroke must be a number, got {quoted(raw)}") from None
    try:
        model.stylizer.mix(style if model.multi_style else None, stroke=stroke)
    except UserError as e:  # a model without stroke scales, or a stroke outside them
        raise RequestError(400, f"model {model.name}: {first_line(e, 200)}") from None
    return stroke


def output_size(width: int, height: int, options: Options, limits: Limits) -> int:
    """The result's long side for a ``width`` x ``height`` photo; ``RequestError`` past the limits.

    Checked from the header, before decoding. EXIF rotation swaps width and height, not the long side.
    """
    long = max(width, height)
    if options.size == 0:
        size = min(long, limits.max_size)
    elif options.size is None:  # not asked for: the default size, at most 2x the photo
        size = min(limits.default_size, MAX_UPSCALE * long)
    else:
        size = options.size
        if size > MAX_UPSCALE * long:
            raise RequestError(
                400,
                f"size {size} px is more than {MAX_UPSCALE}x this photo's long side ({long} px); "
                f"this server makes at most {MAX_UPSCALE * long} px from it",
            )
    scale = size / long
    out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
    if out_w * out_h > limits.max_output_pixels:
        most = int(math.sqrt(limits.max_output_pixels * long * long / (width * height)))
        raise RequestError(
            413,
            f"the result would be {out_w} x {out_h} = {out_w * out_h / 1e6:.1f} megapixels; this server makes at most "
            f"{limits.max_output_pixels / 1e6:g} per request (fastst serve --max-output-megapixels): "
            f"at most {most} px for this photo",
        )
    return size


PAINTING_SIZE = 512  # an uploaded painting is decoded at most at this long side (or the model's style size)


def stylize_upload(
    model: ServedModel,
    data: bytes,
    options: Options,
    limits: Limits,
    cancelled: threading.Event | None = None,
    painting: bytes | None = None,
) -> Result:
    """Decode, stylize and encode one upload (runs in the worker thread); ``painting``: an arbitrary-style
    model's style image (the ``style_image`` part)."""
    if cancelled is not None and cancelled.is_set():
        raise Cancelled
    t0 = time.perf_counter()
    opened = open_image(data, limits.max_pixels)
    size = output_size(*opened.size, options, limits)
    img = load_image(opened, size)
    del opened
    style_image = None
    if painting is not None:
        try:
            opened = open_image(painting, limits.max_pixels)  # the photo's checks: sniffed format, header pixels
        except RequestError as e:
            raise RequestError(e.status, f"the painting (style_image): {e}") from None
        decode = max(PAINTING_SIZE, getattr(model.stylizer, "style_size", None) or 0)  # never upscaled to encode
        style_image = load_image(opened, min(decode, max(opened.size)))
        del opened
    t1 = time.perf_counter()
    kwargs: dict[str, Any] = {"size": size, "strength": options.strength, "preserve_color": options.preserve_color}
    if options.style is not None:
        kwargs["style"] = options.style
    if options.stroke is not None:
        kwargs["stroke"] = options.stroke
    if style_image is not None:
        kwargs["style_image"] = style_image
    try:
        out = model.stylizer(img, **kwargs)
    except UserError as e:  # InferenceError, UnknownStyleError: the request's fault, said in one line
        raise RequestError(400, first_line(e, 300)) from None
    del img
    t2 = time.perf_counter()
    buf = io.BytesIO()
    if options.format == "jpeg":
        out.save(buf, "JPEG", quality=85)
    else:
        out.save(buf, "PNG", compress_level=3)  # level 3: half the time of the default 6, a few % larger
    t3 = time.perf_counter()
    return Result(buf.getvalue(), out.width, out.height, t1 - t0, t2 - t1, t3 - t2)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def cross_site_reason(scope: Mapping[str, Any]) -> str | None:
    """Why a request comes from another site (None when it does not): its ``Sec-Fetch-Site`` or its ``Origin``."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    site = headers.get("sec-fetch-site")
    if site is not None and site not in SAME_SITE:
        return f"Sec-Fetch-Site: {site}"
    origin = headers.get("origin")
    if origin is not None:
        own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
        if origin.lower() != own.lower():
            return f"Origin: {origin[:80]}"
    return None


class SameOriginMiddleware:
    """Refuse (403) ``/api/`` requests sent by another site's page: without this any page the user visits
    can POST to their local server (browsers send such requests; CORS only hides the answer)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            reason = cross_site_reason(scope)
            if reason:
                message = f"cross-site request refused ({reason}); use the page this server serves"
                await _error(403, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Server:
    """The app's state: the models, the limits and the one worker thread."""

    def __init__(self, models: ModelSet, limits: Limits) -> None:
        if not models:
            raise UsageError("no models to serve")
        self.models, self.limits = models, limits
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastst-serve")
        self.pending = 0  # requests admitted and not answered; touched only on the event loop
        self.reading = 0  # uploads being received; touched only on the event loop
        self.disconnected = 0  # admitted requests whose client went away (counted for the tests and the log)
        first = next(iter(models.values()))
        self.device = first.device
        torch_models = [m for m in models.values() if m.backend.startswith("torch")]
        self.dtype = (
            torch_models[0].backend.split()[1] if torch_models else "fp32"
        )  # fp32, bf16, fp16: the flags' words
        package = resources.files("fastst.serve") / "static"
        self.page = (package / "index.html").read_bytes()
        self.static = {name: (package / name).read_bytes() for name in STATIC}

    def info(self) -> dict[str, Any]:
        return {
            "models": self.models.gallery(),
            "fastest": self.models.fastest(),
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

    def _busy(self, what: str) -> JSONResponse:
        return _error(503, f"busy: {what}; try again in a moment", {"Retry-After": "2"})

    async def _receive(self, request: Request, options: Options) -> tuple[bytes, bytes | None]:
        """The photo's bytes (raw body or the ``photo`` part) and the ``style_image`` part's (None without one);
        a painting only for models that take one, and always for them."""
        data = await read_body(
            request, self.limits.max_upload_bytes, self.limits.upload_grace_s, self.limits.min_upload_rate
        )
        content_type = request.headers.get("content-type", "")
        model = self.models[options.model]
        painting = None
        if content_type.lower().startswith("multipart/form-data"):
            parts = split_form(data, content_type)
            if "style_image" in parts and not model.info.get("style_image"):
                raise RequestError(
                    400,
                    f"model {model.name} does not take a painting (style_image): it renders the style(s) it was "
                    "trained on; choose an arbitrary-style model for your own painting",
                )
            data, painting = parts["photo"], parts.get("style_image")
        if model.info.get("style_image") and painting is None:
            raise RequestError(
                400,
                f"model {model.name} takes any painting as its style: send the photo and the painting as "
                "multipart/form-data parts photo and style_image (on the page: choose your own painting)",
            )
        return data, painting

    async def api_stylize(self, request: Request) -> Response:
        try:
            options = parse_options(request.query_params, self.models, self.limits)
        except RequestError as e:
            return _error(e.status, str(e))
        if self.pending >= self.limits.queue:  # refused before reading: a full queue costs no upload
            return self._busy(f"{self.pending} requests are queued")
        if self.reading >= self.limits.max_reading:
            return self._busy(f"{self.reading} uploads are being received")
        self.reading += 1
        try:
            data, painting = await self._receive(request, options)
        except RequestError as e:
            return _error(e.status, str(e))
        except ClientDisconnect:
            return _error(400, "the upload was interrupted")
        finally:
            self.reading -= 1
        if self.pending >= self.limits.queue:  # admitted only once the upload is in: slow clients hold no slot
            return self._busy(f"{self.pending} requests are queued")
        self.pending += 1
        cancelled = threading.Event()
        watcher = asyncio.create_task(self._watch_disconnect(request, cancelled))
        try:
            admitted = time.perf_counter()
            loop = asyncio.get_running_loop()
            model = self.models[options.model]
            result, queued_s = await loop.run_in_executor(
                self.executor, self._run, model, data, options, admitted, cancelled, painting
            )
        except Cancelled:
            return _error(499, "the client went away before its turn")  # nobody reads it
        except RequestError as e:
            return _error(e.status, str(e))
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
            watcher.cancel()
        total_s = queued_s + result.decode_s + result.stylize_s + result.encode_s
        model = self.models[options.model]
        headers = {
            "Cache-Control": "no-store",
            "X-Fastst-Model": options.model,
            "X-Fastst-Backend": model.backend,
            "X-Fastst-Width": str(result.width),
            "X-Fastst-Height": str(result.height),
            "X-Fastst-Stylize-Seconds": f"{result.stylize_s:.4f}",
            "X-Fastst-Total-Seconds": f"{total_s:.4f}",
            "X-Fastst-Queue-Seconds": f"{queued_s:.4f}",
            "X-Fastst-Device": model.device,
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
        media = "image/jpeg" if options.format == "jpeg" else "image/png"
        return Response(result.data, media_type=media, headers=headers)

    def _run(
        self,
        model: ServedModel,
        data: bytes,
        options: Options,
        admitted: float,
        cancelled: threading.Event,
        painting: bytes | None = None,
    ) -> tuple[Result, float]:
        queued_s = time.perf_counter() - admitted
        return stylize_upload(model, data, options, self.limits, cancelled, painting), queued_s

    async def _watch_disconnect(self, request: Request, cancelled: threading.Event) -> None:
        """Set ``cancelled`` when the client goes away (after the body, the next ASGI message is the disconnect)."""
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                self.disconnected += 1
                cancelled.set()
                return

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _free_accelerator_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def create_app(models: ModelSet, limits: Limits | None = None, allowed_hosts: list[str] | None = None) -> Starlette:
    """The Starlette app serving ``models``. ``allowed_hosts`` (e.g. the loopback names when bound to
    127.0.0.1) refuses requests for other host names: a web page elsewhere cannot reach this server by
    pointing a DNS name at 127.0.0.1 (DNS rebinding). Cross-site ``/api/`` requests are refused always."""
    server = Server(models, limits or Limits())

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        server.close()

    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)] if allowed_hosts else []
    middleware.append(Middleware(SameOriginMiddleware))
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
