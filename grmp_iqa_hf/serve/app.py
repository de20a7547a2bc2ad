"""`grmp-iqa serve`: the ASGI app (FastAPI) and the server around it (uvicorn).

Endpoints: `POST /v1/score` (multipart files, or JSON `{"images": [base64, ...]}`), `GET /healthz`,
`GET /v1/model`, `GET /` (the drop-a-photo page). Scoring goes through the package: every upload is decoded by
`modeling.image_loading.load_image` and preprocessed by `model.image_processor` on a small thread pool, and
the model runs on the batcher's one worker thread through `modeling.prediction.batched_outputs` (or
`model.predict` for multi-crop scoring), so a score equals `model.predict` on the same file.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from ..modeling.prediction import DTYPES as _PREDICT_DTYPES
from .batching import BatcherStoppedError, DynamicBatcher
from .page import PAGE_HTML

__all__ = ["ServeSettings", "create_app", "run_server", "DTYPES"]

logger = logging.getLogger("grmp_iqa_hf.serve")

DTYPES = tuple(_PREDICT_DTYPES)  # "float32", "bfloat16", "float16": what `predict(dtype=)` takes
RETRY_AFTER_S = 1  # what a refused client is told to wait (a batch takes milliseconds to a second)


@dataclass(frozen=True)
class ServeSettings:
    """The server's limits and batching knobs (shown by `GET /v1/model`)."""

    max_batch_size: int = 32
    max_wait_ms: float = 10.0
    max_queue: int = 256  # images admitted and not yet scored; more -> 503 + Retry-After
    max_upload_mb: float = 64.0  # request body; more -> 413
    timeout_s: float = 60.0  # whole request; more -> 504
    max_pixels: int | None = None  # per image; None: Pillow's decompression-bomb limit (as `predict`)
    dtype: str = "float32"
    crops: int = 1
    decode_workers: int = 0  # threads decoding uploads; 0: min(4, CPUs)

    def __post_init__(self):
        if self.max_batch_size < 1 or self.max_queue < 1 or self.crops < 1:
            raise ValueError("max_batch_size, max_queue and crops must be >= 1, got "
                             f"{self.max_batch_size}, {self.max_queue}, {self.crops}")
        if self.max_wait_ms < 0 or self.max_upload_mb <= 0 or self.timeout_s <= 0:
            raise ValueError("max_wait_ms must be >= 0 and max_upload_mb, timeout_s > 0, got "
                             f"{self.max_wait_ms}, {self.max_upload_mb}, {self.timeout_s}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class _TooLarge(Exception):
    pass


def _image_error(reason: str, name: str) -> dict:
    return {"name": name, "error": reason}


class _Service:
    """What the app holds: the model (loaded once), its processor, the batcher and the decoding threads."""

    def __init__(self, model, settings: ServeSettings, model_id: str | None, revision: str | None,
                 on_load_error: Callable[[BaseException], None] | None):
        self._model_or_loader = model
        self.settings = settings
        self.model_id, self.revision = model_id, revision
        self.on_load_error = on_load_error
        self.model = None
        self.processor = None
        self.batcher: DynamicBatcher | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.ready = False
        self.load_error: str | None = None
        self._loader_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ startup / shutdown
    def start(self) -> None:
        workers = self.settings.decode_workers or min(4, os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grmp-iqa-decode")
        if callable(self._model_or_loader) and not hasattr(self._model_or_loader, "parameters"):
            # load in the background: the socket answers at once, /healthz says 503 until the model is ready
            self._loader_thread = threading.Thread(target=self._load, name="grmp-iqa-load", daemon=True)
            self._loader_thread.start()
        else:
            self._load()

    def _load(self) -> None:
        try:
            import torch

            model = self._model_or_loader
            if not hasattr(model, "parameters"):
                model = model()
            dtype = getattr(torch, self.settings.dtype)
            if next(model.parameters()).dtype != dtype:
                model = model.to(dtype)
            self.model = model.eval()
            self.processor = model.image_processor
            if self.model_id is None:
                from ..provenance import source_of

                source = source_of(model)
                self.model_id = source.name if source else None
                self.revision = self.revision or (source.commit or source.revision if source else None)
            self.batcher = DynamicBatcher(self._run_batch, self.settings.max_batch_size, self.settings.max_wait_ms,
                                          self.settings.max_queue)
            self.batcher.start()
            self.ready = True
            logger.info("model %s ready (%s, max batch %d)", self.model_id, self.settings.dtype,
                        self.settings.max_batch_size)
        except BaseException as err:  # noqa: BLE001 - reported by /healthz and to the server (exit 1)
            self.load_error = f"{type(err).__name__}: {err}"
            logger.error("cannot load the model: %s", self.load_error)
            if self.on_load_error is not None:
                self.on_load_error(err)
            elif self._loader_thread is None:
                raise

    def stop(self) -> None:
        self.ready = False
        if self.batcher is not None:
            if not self.batcher.stop(timeout=self.settings.timeout_s):
                logger.warning("the scoring worker did not stop within %.0f s", self.settings.timeout_s)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ the work
    def _run_batch(self, payloads: list) -> list[float]:
        """On the batcher's thread: preprocessed tensors -> one forward pass; PIL images -> `predict` (crops)."""
        import torch

        model = self.model
        if self.settings.crops == 1:
            from ..modeling.prediction import batched_outputs

            dtype = next(model.parameters()).dtype
            stacked = torch.stack(payloads).to(dtype)
            scores = batched_outputs(model, lambda chunk: stacked[chunk.start:chunk.stop], range(len(payloads)),
                                     batch_size=len(payloads))["scores"]
        else:  # multi-crop: `predict` places the crops and averages (the model was cast to dtype already)
            crops = self.settings.crops
            scores = model.predict(payloads, batch_size=len(payloads) * crops, progress=False, crops=crops)
        return [float(score) for score in scores.tolist()]

    def decode(self, data, name: str):
        """On a decoding thread: bytes (or base64 text) -> preprocessed pixels, or an error reason (str)."""
        from ..modeling.image_loading import ImageLoadError, load_image

        if isinstance(data, str):
            try:
                text = data.split(",", 1)[1] if data.startswith("data:") else data  # data: URLs too
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError, IndexError) as err:
                return f"not valid base64 ({err})"
        if not data:
            return "empty file"
        too_big = self._over_pixel_limit(data)
        if too_big:
            return too_big
        try:
            image = load_image(data, name=name)  # the upload's bytes: load_image's own reasons for every failure
        except ImageLoadError as err:
            return err.reason
        if self.settings.crops != 1:
            return image
        try:
            return self.processor([image], return_tensors="pt")["pixel_values"][0]
        except Exception as err:  # noqa: BLE001 - one image's failure is that image's error
            return f"cannot preprocess the image ({type(err).__name__}: {err})"

    def _over_pixel_limit(self, data: bytes) -> str | None:
        """The decompression-bomb guard at `max_pixels`, from the header alone (before any pixel is decoded)."""
        limit = self.settings.max_pixels
        if limit is None:
            return None  # Pillow's own guard, inside load_image
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as img:
                pixels = img.size[0] * img.size[1]
        except Exception:  # noqa: BLE001 - unreadable headers are load_image's to report
            return None
        if pixels > limit:
            return f"decompression bomb: {pixels} pixels exceeds the limit of {limit} pixels"
        return None

    async def score(self, uploads: list[tuple[str, object]]) -> list[dict]:
        """Score `(name, data)` pairs in order; raises `_QueueFull` / `BatcherStoppedError`."""
        batcher = self.batcher
        count = len(uploads)
        if not batcher.try_reserve(count):
            raise _QueueFull()
        loop = asyncio.get_running_loop()
        submitted, handles = 0, []
        try:
            decoded = await asyncio.gather(*(loop.run_in_executor(self.pool, self.decode, data, name)
                                             for name, data in uploads))
            results: list = []
            for (name, _), value in zip(uploads, decoded):
                if isinstance(value, str):
                    results.append(_image_error(value, name))
                else:
                    future, handle = batcher.submit(value)
                    submitted += 1
                    handles.append(handle)
                    results.append((name, future))
            for index, entry in enumerate(results):
                if isinstance(entry, tuple):
                    name, future = entry
                    try:
                        results[index] = {"name": name, "score": await future}
                    except Exception as err:  # noqa: BLE001 - the model failed on this batch
                        results[index] = _image_error(f"scoring failed ({type(err).__name__}: {err})", name)
            return results
        finally:
            batcher.release(count - submitted)
            for handle in handles:  # gone (timeout, disconnect): the worker skips what it has not run yet
                handle.abandoned = True

    def describe(self) -> dict:
        model = self.model
        parameter = next(model.parameters())
        return {
            "id": self.model_id,
            "revision": self.revision,
            "method": model.config.model_type,
            "model_type": model.config.model_type,
            "model_class": type(model).__name__,
            "preprocessing": self.processor.to_dict(),
            "dtype": str(parameter.dtype).removeprefix("torch."),
            "device": str(parameter.device),
            **{key: value for key, value in asdict(self.settings).items() if key not in ("dtype", "decode_workers")},
        }


class _QueueFull(Exception):
    pass


def _error(status: int, message: str, **headers) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={k.replace("_", "-"): str(v)
                                                                           for k, v in headers.items()})


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes from Content-Length and again while reading."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge()
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


async def _uploads(request: Request, body: bytes, max_images: int) -> list[tuple[str, object]] | JSONResponse:
    """`(name, bytes or base64 text)` per image in request order, or the error response for a bad request."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        sent = False

        async def replay():  # the body was read (and size-checked) already: hand it to the form parser
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=max_images, max_fields=max_images)
        except Exception as err:  # noqa: BLE001 - malformed multipart, too many parts
            return _error(400, f"cannot read the multipart form: {getattr(err, 'detail', err)}")
        uploads = []
        for _, value in form.multi_items():
            if hasattr(value, "read"):  # an UploadFile (plain text fields are ignored)
                uploads.append((value.filename or f"image #{len(uploads)}", await value.read()))
        await form.close()
    elif content_type in ("application/json", ""):
        try:
            # off the event loop: a large body of base64 text takes a while to parse
            payload = await asyncio.get_running_loop().run_in_executor(None, json.loads, body)
        except ValueError as err:
            return _error(400, f"the body is not JSON ({err}); send multipart files or {{\"images\": [base64, ...]}}")
        images = payload.get("images") if isinstance(payload, dict) else None
        if not isinstance(images, list):
            return _error(400, 'JSON bodies must be {"images": [base64, ...]} (optionally "names": [...])')
        names = payload.get("names")
        names = names if isinstance(names, list) and len(names) == len(images) else None
        uploads = [(str(names[i]) if names else f"image #{i}", item if isinstance(item, str) else b"")
                   for i, item in enumerate(images)]
    else:
        return _error(415, f"unsupported content type {content_type!r}: send multipart/form-data files or JSON")
    if not uploads:
        return _error(400, "no images in the request")
    if len(uploads) > max_images:
        return _error(413, f"{len(uploads)} images in one request; the queue holds at most {max_images}")
    return uploads


def create_app(model, *, model_id: str | None = None, revision: str | None = None, max_batch_size: int = 32,
               max_wait_ms: float = 10.0, max_queue: int = 256, max_upload_mb: float = 64.0, timeout_s: float = 60.0,
               max_pixels: int | None = None, dtype: str = "float32", crops: int = 1, decode_workers: int = 0,
               on_load_error: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The scoring app around `model` (a loaded model, or a function returning one: it is then called on a
    background thread at startup, and `/healthz` answers 503 until it returns). The model is cast to `dtype`
    and set to eval mode; its batcher and decoding threads start with the app's lifespan and stop with it."""
    settings = ServeSettings(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
                             max_upload_mb=max_upload_mb, timeout_s=timeout_s, max_pixels=max_pixels, dtype=dtype,
                             crops=crops, decode_workers=decode_workers)
    service = _Service(model, settings, model_id, revision, on_load_error)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, service.stop)

    app = FastAPI(title="grmp-iqa", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    def not_ready() -> JSONResponse:
        if service.load_error:
            return _error(503, f"the model could not be loaded: {service.load_error}")
        return _error(503, "the model is still loading", retry_after=RETRY_AFTER_S)

    @app.get("/healthz")
    async def healthz():
        if not service.ready or service.batcher is None or not service.batcher.running:
            return not_ready()
        return {"status": "ok", **service.batcher.stats()}

    @app.get("/v1/model")
    async def model_info():
        if not service.ready:
            return not_ready()
        return service.describe()

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(PAGE_HTML)

    @app.post("/v1/score")
    async def score(request: Request):
        if not service.ready:
            return not_ready()

        async def handle():
            try:
                body = await _read_body(request, settings.max_upload_bytes)
            except _TooLarge:
                return _error(413, f"the request is larger than --max-upload-mb {settings.max_upload_mb:g} MB",
                              connection="close")
            uploads = await _uploads(request, body, settings.max_queue)
            if isinstance(uploads, JSONResponse):
                return uploads
            try:
                return {"results": await service.score(uploads)}
            except _QueueFull:
                return _error(503, f"the queue is full ({settings.max_queue} images); retry later",
                              retry_after=RETRY_AFTER_S)
            except BatcherStoppedError as err:
                return _error(503, str(err), retry_after=RETRY_AFTER_S)

        try:
            return await asyncio.wait_for(handle(), settings.timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            return _error(504, f"the request took longer than --timeout-s {settings.timeout_s:g} s")

    return app


def run_server(model_name_or_path, host: str = "127.0.0.1", port: int = 8000, max_batch_size: int = 32,
               max_wait_ms: float = 10.0, max_queue: int = 256, max_upload_mb: float = 64.0, timeout_s: float = 60.0,
               max_pixels: int | None = None, dtype: str = "float32", crops: int = 1, device: str = "auto",
               revision: str | None = None, trust_remote_code: bool = False, decode_workers: int = 0,
               log_level: str = "info", sockets=None, source=None) -> int:
    """Serve `model_name_or_path` (a folder or Hub id, checked before the server starts) until SIGINT/SIGTERM.

    The model loads once, in the background, after the socket is open (`/healthz`: 503, then 200). On SIGTERM
    uvicorn stops accepting, lets in-flight requests finish (at most `timeout_s` more), then the batcher
    scores what is queued and its thread ends. Returns the exit code: 0 after a clean shutdown, 1 when the
    model could not be loaded (after SIGTERM / SIGINT uvicorn raises the signal again once it has shut down, so
    the process ends with that signal's status). `device`: "auto" (cuda when available), "cpu", "cuda" or any
    torch device. Raises `provenance.ModelNotFoundError` for a name that is no model."""
    import uvicorn

    from ..models import load_model
    from ..provenance import resolve_model_source

    if source is None:  # the CLI passes the `provenance.ModelSource` it has checked already
        source = resolve_model_source(model_name_or_path, revision)
    if device in (None, "auto"):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if max_pixels is not None:
        from PIL import Image

        # this process only serves: let Pillow's own (2x, warning at 1x) guard sit above our exact limit
        if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
            Image.MAX_IMAGE_PIXELS = max_pixels
    failures: list[BaseException] = []
    server: uvicorn.Server | None = None

    def load():
        return load_model(model_name_or_path, device=device, revision=revision,
                          trust_remote_code=trust_remote_code, source=source)

    def on_load_error(err):
        failures.append(err)
        if server is not None:
            server.should_exit = True

    app = create_app(load, model_id=source.name, revision=source.commit or source.revision,
                     max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
                     max_upload_mb=max_upload_mb, timeout_s=timeout_s, max_pixels=max_pixels, dtype=dtype,
                     crops=crops, decode_workers=decode_workers, on_load_error=on_load_error)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=max(1, int(timeout_s) + 1))
    server = uvicorn.Server(config)
    server.run(sockets=sockets)
    return 1 if failures else 0
