"""The FastAPI application: routes, authentication, limits, and the hand-off to the engine.

``create_app(config, lm)`` builds one server around one loaded model. Plain sampling goes to the shared
continuous batch (:mod:`hindsight.serve.scheduler`); best-of-N, SMC and RAIN run on a small worker pool
(:mod:`hindsight.serve.methods`). Every failure leaves as an OpenAI error object (:mod:`hindsight.serve.errors`).
"""

from __future__ import annotations

import hmac
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from hindsight.lm.base import LanguageModel
from hindsight.lm.batch import per_thread_counters
from hindsight.serve import methods, schemas
from hindsight.serve.errors import APIError, bad
from hindsight.serve.metrics import CONTENT_TYPE, Metrics
from hindsight.serve.scheduler import Scheduler
from hindsight.serve.stream import answer_method, answer_sample


@dataclass
class ServerConfig:
    """Start-up settings (``hindsight serve`` flags)."""

    api_key: str | None = None
    max_queue: int = 64  # requests waiting to start, beyond which a request gets 429
    max_batch_rows: int = 64  # rows decoding together in the shared batch
    max_body_bytes: int = 1 << 20
    max_n: int = 16
    max_tokens: int = 512
    default_max_tokens: int = 64
    method_workers: int = 1  # best_of_n / smc / rain requests running at once
    retry_after: int = 1  # seconds, in the 429's Retry-After header
    twists: dict[str, str] = field(default_factory=dict)  # name -> twist file (requests can give only the name)


class Server:
    """Everything one running server holds; the routes are thin functions over it."""

    def __init__(self, config: ServerConfig, lm: LanguageModel) -> None:
        self.config, self.lm = config, lm
        self.runtime = methods.runtime_for(lm, config.twists)  # this model and these twists, never a path
        per_thread_counters(lm)  # method threads and the batch thread each count their own forward passes
        self.metrics = Metrics()
        self.scheduler = Scheduler(lm, max_batch_rows=config.max_batch_rows, max_queue=config.max_queue,
                                   metrics=self.metrics)
        self.pool = ThreadPoolExecutor(max_workers=max(1, config.method_workers), thread_name_prefix="hindsight-m")
        self.limits = schemas.Limits(max_n=min(config.max_n, config.max_batch_rows), max_tokens=config.max_tokens,
                                     default_max_tokens=config.default_max_tokens)
        self._waiting_lock = threading.Lock()
        self.methods_waiting = 0  # method requests accepted but not started (changed under _waiting_lock)
        self.draining = False
        self.metrics.queue_depth.set_function(lambda: len(self.scheduler.waiting) + self.methods_waiting)
        self.metrics.active_rows.set_function(lambda: self.scheduler.active_rows)

    def methods_queue(self, delta: int) -> None:
        with self._waiting_lock:
            self.methods_waiting += delta

    # ---- checks -------------------------------------------------------------------------------------------
    def authorise(self, request: Request) -> None:
        key = self.config.api_key
        if not key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise APIError(401, "Missing or incorrect API key: send 'Authorization: Bearer KEY'.",
                           code="invalid_api_key")

    async def body(self, request: Request) -> dict[str, Any]:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"The request body is over the {limit}-byte limit.", code="request_too_large")
        parts, size = [], 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise APIError(413, f"The request body is over the {limit}-byte limit.", code="request_too_large")
            parts.append(part)
        return schemas.load_json(b"".join(parts))

    def prompt_ids(self, p: schemas.Parsed) -> list[int]:
        lm = self.lm
        try:
            ids = lm.chat(p.prompt) if p.kind == "chat" else lm.encode(p.prompt)
        except Exception as e:  # noqa: BLE001 - a template that rejects the roles given
            raise bad(f"The messages do not fit this model's chat template ({type(e).__name__}: {e}).",
                      "messages") from None
        if not ids:
            raise bad("The prompt is empty.", "messages" if p.kind == "chat" else "prompt")
        if len(ids) + p.max_tokens > lm.max_length:
            raise bad(f"The prompt is {len(ids)} tokens and max_tokens is {p.max_tokens}, but {lm.name} has a "
                      f"context of {lm.max_length} tokens.", "max_tokens", "context_length_exceeded")
        return ids

    def too_busy(self) -> APIError:
        return APIError(429, "The server is busy (its queue is full); retry shortly.", code="queue_full",
                        headers={"Retry-After": str(self.config.retry_after)})

    def record(self, route: str, status: int, t0: float) -> None:
        self.metrics.requests.labels(route=route, status=str(status)).inc()
        self.metrics.latency.labels(route=route).observe(time.perf_counter() - t0)

    # ---- the completions routes ---------------------------------------------------------------------------
    async def complete(self, request: Request, kind: str, route: str) -> Response:
        t0 = time.perf_counter()
        try:
            self.authorise(request)
            if self.draining:
                raise APIError(503, "The server is shutting down.", code="shutting_down")
            p = schemas.parse(await self.body(request), kind, self.limits)
            if p.model != self.lm.name:
                raise APIError(404, f"The model {p.model!r} does not exist; this server serves {self.lm.name!r}.",
                               param="model", code="model_not_found")
            ids = self.prompt_ids(p)
            if methods.method_of(p) == "sample":
                if p.stream and p.logprobs:
                    raise bad("'logprobs' is not available when streaming.", "logprobs", "unsupported_parameter")
                top_k = methods.check_sample(p, self.lm)
                return await answer_sample(self, request, p, ids, top_k, route, t0)
            runner = methods.prepare(self.lm, p, self.runtime)
            return await answer_method(self, request, p, ids, runner, route, t0)
        except APIError as e:
            self.record(route, e.status, t0)
            return error_response(e)


def error_response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def create_app(config: ServerConfig, lm: LanguageModel) -> FastAPI:
    """One application serving ``lm`` (already loaded) under ``config``."""
    server = Server(config, lm)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        server.scheduler.start()
        yield
        server.draining = True
        server.scheduler.stop()
        server.pool.shutdown(wait=True)

    app = FastAPI(title="hindsight", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(APIError(exc.status_code, str(exc.detail), code=code))

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(APIError(500, f"Internal error ({type(exc).__name__}).", code="internal_error"))

    @app.get("/health")
    async def health() -> JSONResponse:
        status = 503 if server.draining else 200
        return JSONResponse({"status": "draining" if server.draining else "ok", "model": lm.name,
                             "active_rows": server.scheduler.active_rows,
                             "waiting": len(server.scheduler.waiting) + server.methods_waiting}, status_code=status)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        try:
            server.authorise(request)
        except APIError as e:
            return error_response(e)
        return JSONResponse({"object": "list", "data": [
            {"id": lm.name, "object": "model", "created": 0, "owned_by": "hindsight"}]})

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await server.complete(request, "chat", "/v1/chat/completions")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await server.complete(request, "completion", "/v1/completions")

    return app
