"""OpenAI request bodies in, OpenAI response bodies out.

Parsing is strict and names the offending field: a wrong type, a value out of range or an unknown field is a
400 whose ``param`` points at it, before any model work. What a request asks of hindsight (``"hindsight":
{"method": ...}``) is kept as a dict here and handed to :mod:`hindsight.serve.methods`.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from hindsight.serve.errors import bad

ROLES = ("system", "developer", "user", "assistant")
MAX_STOP = 4
MAX_TOP_LOGPROBS = 5
COMMON = {"model", "n", "max_tokens", "temperature", "top_p", "seed", "stop", "stream", "stream_options",
          "logprobs", "hindsight", "user"}
CHAT_ONLY = {"messages", "top_logprobs", "max_completion_tokens"}
COMPLETION_ONLY = {"prompt", "echo"}
ZERO_OK = ("frequency_penalty", "presence_penalty")  # accepted when 0 (what many clients send by default)


@dataclass
class Limits:
    max_n: int = 16
    max_tokens: int = 512
    default_max_tokens: int = 64


@dataclass
class Parsed:
    """One validated request. ``prompt`` is the messages list (chat) or the prompt text (completions)."""

    kind: str  # "chat" or "completion"
    model: str
    prompt: Any
    n: int = 1
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    method: dict[str, Any] = field(default_factory=dict)
    explicit: set[str] = field(default_factory=set)  # fields the client set (methods have their own defaults)


def load_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object.", code="invalid_json")
    return body


def _int(body: dict, key: str, default: int | None, low: int, high: int) -> int | None:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad(f"'{key}' must be an integer (got {json.dumps(v)[:40]}).", key, "invalid_type")
    if not low <= v <= high:
        raise bad(f"'{key}' must be between {low} and {high} (got {v}).", key)
    return v


def _num(body: dict, key: str, default: float, low: float, high: float, open_low: bool = False) -> float:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise bad(f"'{key}' must be a number (got {json.dumps(v)[:40]}).", key, "invalid_type")
    v = float(v)
    if not math.isfinite(v) or v > high or v < low or (open_low and v == low):
        side = "(" if open_low else "["
        raise bad(f"'{key}' must be in {side}{low}, {high}] (got {v}).", key)
    return v


def _bool(body: dict, key: str, default: bool = False) -> bool:
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise bad(f"'{key}' must be true or false (got {json.dumps(v)[:40]}).", key, "invalid_type")
    return v


def _stop(body: dict) -> list[str]:
    v = body.get("stop")
    if v is None:
        return []
    stops = [v] if isinstance(v, str) else v
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad("'stop' must be a non-empty string or a list of them.", "stop", "invalid_type")
    if len(stops) > MAX_STOP:
        raise bad(f"'stop' takes at most {MAX_STOP} sequences (got {len(stops)}).", "stop")
    return stops


def _messages(body: dict) -> list[dict[str, str]]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad("'messages' must be a non-empty list of {role, content} objects.", "messages",
                  "invalid_type" if msgs is not None else "missing_required_parameter")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise bad(f"messages[{i}] needs a role among {', '.join(ROLES)}.", f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):  # content parts: only text parts are understood
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise bad(f"messages[{i}].content parts must all be text parts.", f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise bad(f"messages[{i}].content must be a string.", f"messages[{i}].content", "invalid_type")
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({"role": role, "content": content})
    if not any(m["content"].strip() for m in out):
        raise bad("Every message is empty.", "messages")
    return out


def _prompt(body: dict) -> str:
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
        p = p[0]
    if not isinstance(p, str):
        raise bad("'prompt' must be a string (one prompt per request).", "prompt",
                  "invalid_type" if p is not None else "missing_required_parameter")
    if not p.strip():
        raise bad("The prompt is empty.", "prompt")
    return p


def _check_fields(body: dict, kind: str) -> None:
    allowed = COMMON | (CHAT_ONLY if kind == "chat" else COMPLETION_ONLY)
    for key, value in body.items():
        if key in allowed:
            continue
        if key in ZERO_OK and (value is None or value == 0):
            continue
        if key == "logit_bias" and not value:
            continue
        raise bad(f"Unrecognized request argument supplied: {key}.", key, "unknown_parameter")


def parse(body: dict[str, Any], kind: str, limits: Limits) -> Parsed:
    """Check every field of a chat (``kind="chat"``) or completions body and return it typed."""
    _check_fields(body, kind)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("'model' must be a model name (see GET /v1/models).", "model",
                  "invalid_type" if model is not None else "missing_required_parameter")
    prompt = _messages(body) if kind == "chat" else _prompt(body)
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    p = Parsed(kind=kind, model=model, prompt=prompt,
               n=_int(body, "n", 1, 1, limits.max_n),
               max_tokens=_int(body, key, limits.default_max_tokens, 1, limits.max_tokens),
               temperature=_num(body, "temperature", 1.0, 0.0, 2.0),
               top_p=_num(body, "top_p", 1.0, 0.0, 1.0, open_low=True),
               seed=_int(body, "seed", None, -(2**63), 2**63 - 1),
               stop=_stop(body), stream=_bool(body, "stream"),
               explicit={k for k, v in body.items() if v is not None})
    _logprobs(body, kind, p)
    opts = body.get("stream_options")
    if opts is not None:
        if not isinstance(opts, dict) or not isinstance(opts.get("include_usage", False), bool):
            raise bad("'stream_options' must be an object such as {\"include_usage\": true}.", "stream_options")
        p.include_usage = bool(opts.get("include_usage", False))
    if body.get("echo"):
        raise bad("'echo' is not supported.", "echo", "unsupported_parameter")
    method = body.get("hindsight")
    if method is not None and not isinstance(method, dict):
        raise bad("'hindsight' must be an object such as {\"method\": \"smc\", ...}.", "hindsight", "invalid_type")
    p.method = dict(method or {})
    return p


def _logprobs(body: dict, kind: str, p: Parsed) -> None:
    if kind == "chat":
        p.logprobs = _bool(body, "logprobs")
        p.top_logprobs = _int(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS) or 0
        if p.top_logprobs and not p.logprobs:
            raise bad("'top_logprobs' needs 'logprobs': true.", "top_logprobs")
    else:  # completions: logprobs is the number of alternatives (0 = the chosen token only)
        k = _int(body, "logprobs", None, 0, MAX_TOP_LOGPROBS)
        p.logprobs, p.top_logprobs = k is not None, k or 0


# ---- responses -------------------------------------------------------------------------------------------------
def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def choice(kind: str, index: int, text: str, finish: str | None, logprobs: Any = None) -> dict[str, Any]:
    if kind == "chat":
        return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                "finish_reason": finish}
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}


def completion(p: Parsed, rid: str, model: str, choices: list[dict], use: dict, extra: dict) -> dict[str, Any]:
    obj = "chat.completion" if p.kind == "chat" else "text_completion"
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model, "choices": json_safe(choices),
            "usage": use, "system_fingerprint": None, "hindsight": json_safe(extra)}


def json_safe(obj: Any) -> Any:
    """Strict JSON has no infinities or NaN: such a number (e.g. ``log_z = -inf`` when every particle has
    ``phi = 0``) becomes null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def chunk(p: Parsed, rid: str, model: str, index: int, text: str | None, finish: str | None,
          logprobs: Any = None, role: bool = False) -> dict[str, Any]:
    """One streamed chunk (``chat.completion.chunk`` or a ``text_completion`` piece)."""
    if p.kind == "chat":
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        c: dict[str, Any] = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        c = {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model, "choices": [c]}


def token_logprobs(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """``items``: per token {token, logprob, top: [(token, logprob), ...]} → the OpenAI logprobs object."""
    if kind == "chat":
        return {"content": [{"token": it["token"], "logprob": it["logprob"],
                             "bytes": list(it["token"].encode("utf-8")),
                             "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))}
                                              for t, lp in it["top"]]} for it in items]}
    offsets, pos = [], 0
    for it in items:
        offsets.append(pos)
        pos += len(it["token"])
    return {"tokens": [it["token"] for it in items], "token_logprobs": [it["logprob"] for it in items],
            "top_logprobs": [dict(it["top"]) for it in items] if items and items[0]["top"] else None,
            "text_offset": offsets}

