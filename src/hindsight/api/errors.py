"""The error a request raises when one of its fields is wrong: it names the field, so any face can point at it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hindsight.errors import HindsightError


class InvalidRequest(HindsightError):
    """One sentence about one request field, ``param``.

    ``template`` may spell the field as ``{param}``: the library prints the field name (``max_tokens``), the CLI
    prints its flag instead (``--max-tokens``) through :meth:`renamed`.
    """

    def __init__(self, param: str, template: str) -> None:
        self.param = param
        self.template = template
        super().__init__(template.replace("{param}", param))

    @property
    def message(self) -> str:
        return str(self)

    def renamed(self, name: str) -> InvalidRequest:
        """The same error, with the field called ``name`` (e.g. a CLI flag)."""
        err = InvalidRequest(self.param, self.template)
        err.args = (self.template.replace("{param}", name),)
        return err


@contextmanager
def blame(param: str) -> Iterator[None]:
    """Errors raised while building what ``param`` names (a model, a potential, a twist) are that field's fault."""
    try:
        yield
    except InvalidRequest:
        raise
    except HindsightError as e:
        raise InvalidRequest(param, str(e)) from None
