"""Waiting for the engine and answering: a whole completion, or server-sent events ending in ``[DONE]``.

The engine thread (or a method worker) reports through an :class:`asyncio.Queue` fed with
``loop.call_soon_threadsafe``. A client that goes away cancels its job, so its rows leave the batch at the next
step.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from hindsight.serve import schemas
from hindsight.serve.errors import failed
from hindsight.serve.scheduler import QueueFull, SampleJob

if TYPE_CHECKING:
    from hindsight.serve.app import Server

POLL_SECONDS = 0.2  # how often a waiting non-streaming request checks that its client is still there


def _emitter(queue: asyncio.Queue) -> Callable[[tuple], None]:
    loop = asyncio.get_running_loop()

    def emit(event: tuple) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, event)
        except RuntimeError:  # the loop has closed: nobody is listening any more
            pass

    return emit


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _next_or_gone(queue: asyncio.Queue, request: Request) -> tuple | None:
    """The next event, or None if the client disconnected first."""
    get = asyncio.ensure_future(queue.get())
    try:
        while True:
            done, _ = await asyncio.wait({get}, timeout=POLL_SECONDS)
            if done:
                return get.result()
            if await request.is_disconnected():
                return None
    finally:
        if not get.done():
            get.cancel()


def _body(server: Server, p: schemas.Parsed, ids: list[int], rid: str, choices: list[dict],
          info: dict[str, Any]) -> dict[str, Any]:
    """The final completion object; ``usage`` counts exactly the tokens returned."""
    out, counted = [], 0
    per_choice = info.setdefault("choices", [{} for _ in choices])
    for i, c in enumerate(choices):
        lp = schemas.token_logprobs(p.kind, c["items"]) if p.logprobs and "items" in c else None
        out.append(schemas.choice(p.kind, i, c["text"], c["finish_reason"], lp))
        n = len(c["tokens"]) if "tokens" in c else c["count"]
        per_choice[i]["tokens"] = n
        counted += n
    server.metrics.tokens_in.inc(len(ids))
    return schemas.completion(p, rid, server.lm.name, out, schemas.usage(len(ids), counted), info)


def _sample_info(choices: list[dict], extra: dict[str, Any]) -> dict[str, Any]:
    return {"method": "sample", "choices": [{"logprob": c["logprob"]} for c in choices], **extra}


async def answer_sample(server: Server, request: Request, p: schemas.Parsed, ids: list[int], top_k: int,
                        route: str, t0: float) -> Response:
    queue: asyncio.Queue = asyncio.Queue()
    job = SampleJob(prompt_ids=ids, n=p.n, max_tokens=p.max_tokens, emit=_emitter(queue), temperature=p.temperature,
                    top_p=p.top_p, top_k=top_k, stop=p.stop, seed=p.seed, top_logprobs=p.top_logprobs,
                    stream=p.stream)
    try:
        server.scheduler.submit(job)
    except QueueFull:
        raise server.too_busy() from None
    rid = schemas.new_id(p.kind)
    if p.stream:
        server.record(route, 200, t0)
        return _streaming(_sample_events(server, p, ids, rid, queue, job))
    event = await _next_or_gone(queue, request)
    if event is None:
        server.scheduler.cancel(job)
        server.record(route, 499, t0)
        return Response(status_code=499)
    if event[0] == "error":
        raise failed(event[1])
    _, choices, extra = event
    server.record(route, 200, t0)
    return JSONResponse(_body(server, p, ids, rid, choices, _sample_info(choices, extra)))


def _streaming(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _sample_events(server: Server, p: schemas.Parsed, ids: list[int], rid: str, queue: asyncio.Queue,
                         job: SampleJob) -> AsyncIterator[str]:
    name, finished = server.lm.name, False
    try:
        if p.kind == "chat":
            for i in range(p.n):
                yield sse(schemas.chunk(p, rid, name, i, "", None, role=True))
        while True:
            event = await queue.get()
            if event[0] == "delta":
                yield sse(schemas.chunk(p, rid, name, event[1], event[2], None))
                continue
            finished = True
            if event[0] == "error":
                yield sse(failed(event[1]).body())
                break
            _, choices, extra = event
            for i, c in enumerate(choices):
                yield sse(schemas.chunk(p, rid, name, i, c["text"][c["sent"]:], c["finish_reason"]))
            final = _body(server, p, ids, rid, choices, _sample_info(choices, extra))
            if p.include_usage:
                yield sse({**schemas.chunk(p, rid, name, 0, None, None), "choices": [], "usage": final["usage"],
                           "hindsight": final["hindsight"]})
            break
        yield "data: [DONE]\n\n"
    finally:
        if not finished:  # the client went away (or the server is stopping): free the rows now
            server.scheduler.cancel(job)


# ---- methods (best_of_n, smc, rain) ---------------------------------------------------------------------------
async def answer_method(server: Server, request: Request, p: schemas.Parsed, ids: list[int], runner,
                        route: str, t0: float) -> Response:
    waiting = len(server.scheduler.waiting) + server.methods_waiting
    if waiting >= server.config.max_queue:
        raise server.too_busy()
    queue: asyncio.Queue = asyncio.Queue()
    emit = _emitter(queue)
    on_text = (lambda text: emit(("text", text))) if p.stream else None
    server.methods_queue(+1)

    def work() -> None:
        server.methods_queue(-1)
        server.metrics.running_methods.inc()
        try:
            result = runner(on_text)
            server.metrics.forward_passes.inc(result["hindsight"].get("forward_passes", 0))
            emit(("end", result))
        except Exception as e:  # noqa: BLE001 - this request fails alone
            emit(("error", e))
        finally:
            server.metrics.running_methods.dec()

    asyncio.get_running_loop().run_in_executor(server.pool, work)
    rid = schemas.new_id(p.kind)
    if p.stream:
        server.record(route, 200, t0)
        return _streaming(_method_events(server, p, ids, rid, queue))
    event = await _next_or_gone(queue, request)
    if event is None:  # the method cannot be stopped half-way; its result is dropped
        server.record(route, 499, t0)
        return Response(status_code=499)
    if event[0] == "error":
        raise failed(event[1])
    result = event[1]
    server.record(route, 200, t0)
    return JSONResponse(_body(server, p, ids, rid, result["choices"], result["hindsight"]))


async def _method_events(server: Server, p: schemas.Parsed, ids: list[int], rid: str,
                         queue: asyncio.Queue) -> AsyncIterator[str]:
    """RAIN streams each committed piece of text as it commits; the rest of the answer comes at the end."""
    name, sent = server.lm.name, 0
    yield sse(schemas.chunk(p, rid, name, 0, "", None, role=True))
    while True:
        event = await queue.get()
        if event[0] == "text":
            if len(event[1]) > sent:
                yield sse(schemas.chunk(p, rid, name, 0, event[1][sent:], None))
                sent = len(event[1])
            continue
        if event[0] == "error":
            yield sse(failed(event[1]).body())
            break
        c = event[1]["choices"][0]
        yield sse(schemas.chunk(p, rid, name, 0, c["text"][sent:], c["finish_reason"]))
        final = _body(server, p, ids, rid, event[1]["choices"], event[1]["hindsight"])
        if p.include_usage:
            yield sse({**schemas.chunk(p, rid, name, 0, None, None), "choices": [], "usage": final["usage"],
                       "hindsight": final["hindsight"]})
        break
    yield "data: [DONE]\n\n"

