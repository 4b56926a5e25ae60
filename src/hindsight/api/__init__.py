"""One typed request -> one JSON-serialisable result, per method; all validation of user input.

>>> from hindsight.api import GenerateRequest, Runtime, run
>>> run(GenerateRequest(prompt="Tell me a joke.", n=2, seed=0), Runtime())["samples"]  # doctest: +SKIP
"""

from hindsight.api.errors import InvalidRequest
from hindsight.api.requests import (REQUESTS, CiteRequest, DefendRequest, GenerateRequest, RainRequest,
                                    RerankRequest, RetrieveRequest, ScoreRequest, SMCRequest)
from hindsight.api.base import Request
from hindsight.api.run import json_result, run, run_dict
from hindsight.api.runtime import Runtime

__all__ = ["REQUESTS", "CiteRequest", "DefendRequest", "GenerateRequest", "InvalidRequest", "RainRequest",
           "Request", "RerankRequest", "RetrieveRequest", "Runtime", "SMCRequest", "ScoreRequest", "json_result",
           "run", "run_dict"]
