"""The HTTP service (Starlette on uvicorn): the page, /health, /models and /predict.

A request to /predict goes: query checked (400 / 404) -> admitted or refused (503 + Retry-After) ->
body read up to the size limit (413) -> the file part of a multipart form, or the raw body -> decoded in
memory after the declared-size check (413 / 415 / 400; in a thread) -> its model's batch queue -> the
worker thread predicts the batch and renders each reply (JSON, label PNG or overlay PNG) -> answered.
Every error is one line of JSON, `{"error": "..."}`; the event loop never runs a model or decodes an image.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from importlib import resources

import numpy as np

from .batching import Admission, BatchQueue, Busy
from .models import ServedModel, predict_batch
from .uploads import RequestError, decode_image, multipart_file, read_body

log = logging.getLogger("seglab.serve")

FORMATS = {"json": "application/json", "label": "image/png", "overlay": "image/png"}
COMMON_PARAMS = ("model", "format", "alpha", "map")
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src blob: data:; "
               "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")


@dataclass
class ServeSettings:
    max_batch: int = 4                   # images predicted together at most
    batch_wait_ms: float = 10.0          # how long a free worker waits for a batch to fill
    queue_limit: int = 32                # requests held at once; one more gets 503 + Retry-After
    workers: int = 1                     # threads running the models
    max_upload_bytes: int = 20 * 2**20   # request bodies above this get 413
    max_pixels: int = 16_000_000         # images declaring more pixels get 413 (decompression bombs)


@dataclass
class Job:
    image: np.ndarray
    format: str
    params: dict
    with_map: bool
    received: float = field(default_factory=time.perf_counter)


@dataclass
class Reply:
    body: bytes
    media_type: str
    headers: dict


def run_jobs(model: ServedModel, jobs: list[Job]) -> list:
    """In a worker thread: predict the batch, then render each reply (an exception for a job that failed)."""
    started = time.perf_counter()
    try:
        results = predict_batch(model.predictor, [j.image for j in jobs])
    except Exception:  # find the image the model cannot take, and answer the others
        results = []
        for job in jobs:
            try:
                results.append(predict_batch(model.predictor, [job.image])[0])
            except Exception as e:
                log.exception("model %s failed on a %dx%d image", model.name, job.image.shape[1], job.image.shape[0])
                results.append(RequestError(422, f"model {model.name!r} cannot predict this {job.image.shape[1]}x"
                                                 f"{job.image.shape[0]} image ({type(e).__name__}: {e})"))
    predict_ms = 1000 * (time.perf_counter() - started)
    replies: list = []
    for job, result in zip(jobs, results):
        if isinstance(result, Exception):
            replies.append(result)
            continue
        timing = {"queue_ms": round(1000 * (started - job.received), 2), "predict_ms": round(predict_ms, 2),
                  "batch": len(jobs)}
        try:
            replies.append(render(model, job, result, timing))
        except Exception as e:
            log.exception("rendering a %s reply of model %s failed", job.format, model.name)
            replies.append(e)
    return replies


def render(model: ServedModel, job: Job, result, timing: dict) -> Reply:
    headers = {"X-Seglab-Batch": str(timing["batch"]), "X-Seglab-Predict-Ms": str(timing["predict_ms"])}
    if job.format == "label":
        return Reply(model.renderer.label_png(result, job.params), "image/png",
                     {**headers, "Content-Disposition": 'inline; filename="labels.png"'})
    if job.format == "overlay":
        return Reply(model.renderer.overlay_png(job.image, result, job.params), "image/png",
                     {**headers, "Content-Disposition": 'inline; filename="overlay.png"'})
    body = {"model": model.name, "task": model.task.name,
            **model.renderer.json(result, job.params, with_map=job.with_map), "timing": timing}
    return Reply(json.dumps(body, separators=(",", ":")).encode(), "application/json", headers)


def parse_flag(name: str, text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no", ""):
        return False
    raise RequestError(400, f"{name} must be 1 or 0, got {text!r}")


class Service:
    """The models, their batch queues and the admission bound, behind the routes."""

    def __init__(self, models: Sequence[ServedModel], settings: ServeSettings):
        if not models:
            raise ValueError("a server needs at least one model")
        self.models = {m.name: m for m in models}
        self.settings = settings
        self.admission = Admission(settings.queue_limit, settings.workers)
        self.queues: dict[str, BatchQueue] = {}
        self.page = resources.files(__package__).joinpath("page.html").read_bytes()

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        executor = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="seglab-model")
        slots = asyncio.Semaphore(self.settings.workers)
        self.queues = {name: BatchQueue(partial(run_jobs, model), executor=executor, slots=slots,
                                        max_batch=self.settings.max_batch,
                                        max_wait_s=self.settings.batch_wait_ms / 1000,
                                        on_batch=self.admission.record)
                       for name, model in self.models.items()}
        for q in self.queues.values():
            q.start()
        try:
            yield
        finally:
            for q in self.queues.values():
                await q.stop()
            executor.shutdown(wait=False, cancel_futures=True)

    # --- query ------------------------------------------------------------------------------------------
    def parse_query(self, items: list[tuple[str, str]]) -> tuple[ServedModel, Job]:
        query: dict[str, str] = {}
        for key, value in items:
            if key in query:
                raise RequestError(400, f"query parameter {key!r} is given twice")
            query[key] = value
        if "model" in query:
            model = self.models.get(query["model"])
            if model is None:
                raise RequestError(404, f"unknown model {query['model']!r} (this server serves: "
                                        f"{', '.join(self.models)})")
        elif len(self.models) == 1:
            model = next(iter(self.models.values()))
        else:
            raise RequestError(400, f"say which model: ?model=NAME (this server serves: {', '.join(self.models)})")
        allowed = (*COMMON_PARAMS, *model.renderer.params)
        for key in query:
            if key not in allowed:
                raise RequestError(400, f"unknown query parameter {key!r} for {model.task.name} model {model.name!r} "
                                        f"(expected: {', '.join(allowed)})")
        fmt = query.get("format", "json")
        if fmt not in FORMATS:
            raise RequestError(400, f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        params: dict = dict(model.renderer.params)
        for key in model.renderer.params:
            if key in query:
                try:
                    params[key] = model.renderer.parse_param(key, query[key])
                except ValueError as e:
                    raise RequestError(400, str(e)) from None
        if "alpha" in query:
            try:
                params["alpha"] = float(query["alpha"])
            except ValueError:
                params["alpha"] = float("nan")
            if not 0.0 <= params["alpha"] <= 1.0:
                raise RequestError(400, f"alpha must be a number in [0, 1], got {query['alpha']!r}")
        job = Job(image=np.zeros((0, 0, 3), np.uint8), format=fmt, params=params,
                  with_map=parse_flag("map", query.get("map", "0")))
        return model, job

    # --- routes ---------------------------------------------------------------------------------------------
    async def predict(self, request):
        from starlette.responses import Response

        model, job = self.parse_query(request.query_params.multi_items())
        from starlette.requests import ClientDisconnect

        self.admission.enter()
        try:
            try:
                body = await read_body(request.headers.get("content-length"), request.stream(),
                                       self.settings.max_upload_bytes)
            except ClientDisconnect:
                raise RequestError(400, "the client went away before the upload was complete") from None
            content_type = request.headers.get("content-type", "")
            if content_type.lower().startswith("multipart/form-data"):
                body = await asyncio.to_thread(multipart_file, body, content_type)
            job.image = await asyncio.to_thread(decode_image, body, max_pixels=self.settings.max_pixels,
                                                in_channels=model.in_channels)
            del body
            reply = await self.queues[model.name].submit(job)
        finally:
            self.admission.leave()
        return Response(reply.body, media_type=reply.media_type, headers=with_safety(reply.headers))

    async def health(self, request):
        return json_response({"status": "ok", "models": list(self.models), "in_progress": self.admission.active,
                              "queue_limit": self.settings.queue_limit, "workers": self.settings.workers,
                              "max_batch": self.settings.max_batch, "batch_wait_ms": self.settings.batch_wait_ms,
                              "max_upload_bytes": self.settings.max_upload_bytes,
                              "max_pixels": self.settings.max_pixels})

    async def list_models(self, request):
        return json_response({"models": [m.card() for m in self.models.values()]})

    async def index(self, request):
        from starlette.responses import Response

        return Response(self.page, media_type="text/html; charset=utf-8",
                        headers=with_safety({"Content-Security-Policy": PAGE_POLICY}))


def with_safety(headers: dict) -> dict:
    return {**headers, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def json_response(obj, status: int = 200, headers: dict | None = None):
    from starlette.responses import Response

    return Response(json.dumps(obj, separators=(",", ":")), status_code=status, media_type="application/json",
                    headers=with_safety(headers or {}))


def error_response(status: int, message: str, headers: dict | None = None):
    return json_response({"error": " ".join(str(message).split())}, status, headers)


def create_app(models: Sequence[ServedModel], settings: ServeSettings | None = None):
    """The Starlette application serving `models` (see `load_served_model`)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    service = Service(models, settings or ServeSettings())

    async def request_error(request, exc: RequestError):
        return error_response(exc.status, exc.message, exc.headers)

    async def busy(request, exc: Busy):
        return error_response(503, str(exc), {"Retry-After": str(exc.retry_after)})

    async def http_error(request, exc: HTTPException):
        hint = {404: f"no such page: {request.url.path} (try /, /health, /models or POST /predict)",
                405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, exc.detail)
        return error_response(exc.status_code, hint, dict(exc.headers or {}))

    async def internal_error(request, exc: Exception):
        log.error("internal error on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return error_response(500, f"internal error ({type(exc).__name__}: {exc})")

    app = Starlette(routes=[Route("/", service.index, methods=["GET"]),
                            Route("/health", service.health, methods=["GET"]),
                            Route("/models", service.list_models, methods=["GET"]),
                            Route("/predict", service.predict, methods=["POST"])],
                    exception_handlers={RequestError: request_error, Busy: busy, HTTPException: http_error,
                                        Exception: internal_error},
                    lifespan=service.lifespan)
    app.state.service = service
    return app
