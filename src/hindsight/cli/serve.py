"""``hindsight serve``: the OpenAI-compatible server (FastAPI + uvicorn) over one loaded model."""

from __future__ import annotations

import os

import typer

from hindsight.cli.common import DEVICE_OPTION, MODEL_OPTION, err, get_model
from hindsight.errors import HindsightError


def serve(
    model: str = MODEL_OPTION,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback unless you say otherwise)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: str = typer.Option(None, "--api-key", envvar="HINDSIGHT_API_KEY", show_envvar=True,
                                help="Require 'Authorization: Bearer KEY' on every /v1 route."),
    twist: list[str] = typer.Option([], "--twist", help="NAME=FILE: a twist file requests may name (repeatable)."),
    max_queue: int = typer.Option(64, "--max-queue", help="Requests waiting to start before new ones get 429."),
    max_batch_rows: int = typer.Option(64, "--max-batch-rows", help="Rows decoding together in the shared batch."),
    max_tokens: int = typer.Option(512, "--max-tokens", help="The largest max_tokens a request may ask for."),
    method_workers: int = typer.Option(1, "--method-workers", help="best_of_n / smc / rain requests run at once."),
    max_body: int = typer.Option(1 << 20, "--max-body-bytes", help="Larger request bodies get 413."),
    device: str = DEVICE_OPTION,
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn's log level."),
) -> None:
    """Serve the model over an OpenAI-compatible HTTP API (chat, completions, streaming, SMC, best-of-N, RAIN)."""
    import uvicorn

    from hindsight.serve import ServerConfig, create_app
    from hindsight.serve.methods import twist_specs

    for name, value in (("--max-queue", max_queue), ("--max-batch-rows", max_batch_rows),
                        ("--max-tokens", max_tokens), ("--method-workers", method_workers),
                        ("--max-body-bytes", max_body)):
        if value < 1:
            raise HindsightError(f"{name} must be at least 1 (got {value}).")
    if not 0 < port < 65536:
        raise HindsightError(f"--port must be in 1..65535 (got {port}).")
    specs = twist_specs(twist)
    lm = get_model(model, device)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        err.print(f"warning: serving on {host} without --api-key: anyone who can reach it can use it.")
    config = ServerConfig(api_key=api_key or None, max_queue=max_queue, max_batch_rows=max_batch_rows,
                          max_body_bytes=max_body, max_tokens=max_tokens, method_workers=method_workers,
                          twists=specs)
    app = create_app(config, lm)

    class DrainingServer(uvicorn.Server):
        """On SIGTERM/SIGINT the app first marks itself draining (new requests get 503); uvicorn then stops
        accepting connections and waits for the running requests before it exits."""

        def handle_exit(self, sig, frame) -> None:  # noqa: ANN001 - uvicorn's signature
            app.state.server.draining = True
            super().handle_exit(sig, frame)

    server = DrainingServer(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False))
    err.print(f"serving {lm.name} on http://{host}:{port}/v1 (pid {os.getpid()})")
    server.run()


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.command("serve")(serve)
