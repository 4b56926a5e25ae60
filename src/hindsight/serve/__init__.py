"""``hindsight serve``: an OpenAI-compatible HTTP server over the samplers, batching plain sampling across requests.

``create_app(ServerConfig(...), lm)`` is the FastAPI application; ``hindsight.cli.serve`` runs it under uvicorn.
"""

from __future__ import annotations

from hindsight.serve.app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]
