"""hindsight: inference-time alignment and probabilistic inference with language models.

Everything targets ``p(x | prompt) * phi(x)`` for some potential ``phi``; the language-model engine in
:mod:`hindsight.lm` is shared by every sampler, scorer and evaluator.
"""

from hindsight.errors import HindsightError

__version__ = "0.1.0"
__all__ = ["HindsightError", "__version__"]
