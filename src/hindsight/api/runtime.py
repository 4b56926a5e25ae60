"""What requests run against: loaded models (cached by name), the device, and twists registered by name.

The CLI builds one with ``allow_paths=True`` (a request may name a checkpoint directory or a twist file); a
server builds one with ``allow_paths=False``, so a request can reach only what the operator registered.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hindsight.api.errors import InvalidRequest, blame
from hindsight.lm import LanguageModel
from hindsight.reverse.models import ReverseModel

Loader = Callable[[str | None, str | None], LanguageModel]


def _default_loader(name: str | None, device: str | None) -> LanguageModel:
    from hindsight.lm import load_model

    return load_model(name, device=device)


class Runtime:
    """Models, reverse models and twists by name; loading happens once per name."""

    def __init__(self, *, device: str | None = None, allow_paths: bool = True,
                 models: dict[str, LanguageModel | str] | None = None,
                 reverse_models: dict[str, ReverseModel | LanguageModel | str] | None = None,
                 twists: dict[str, str | Path] | None = None, loader: Loader | None = None) -> None:
        from hindsight.api import checks

        checks.device(device)  # every request runs here: a device torch or this machine lacks fails at once
        self.device = device
        self.allow_paths = allow_paths
        self.loader = loader or _default_loader
        self._models: dict[str, LanguageModel | str] = dict(models or {})
        self._reverse: dict[str, ReverseModel | LanguageModel | str] = dict(reverse_models or {})
        self._twists: dict[str, Path] = {k: Path(v) for k, v in (twists or {}).items()}
        self._loaded: dict[tuple[str, str | None], Any] = {}

    # ---- registration ------------------------------------------------------------------------------------
    def register_model(self, name: str, model: LanguageModel | str) -> None:
        """A loaded model, or a known model name / checkpoint directory to load on first use."""
        self._models[name] = model

    def register_reverse_model(self, name: str, model: ReverseModel | LanguageModel | str) -> None:
        self._reverse[name] = model

    def register_twist(self, name: str, path: str | Path) -> None:
        self._twists[name] = Path(path)

    @property
    def model_names(self) -> list[str]:
        """The names a request may give as ``model`` (besides paths, where those are allowed)."""
        return list(self._models)

    # ---- lookup ------------------------------------------------------------------------------------------
    def _cached(self, key: tuple[str, str | None], build: Callable[[], Any]) -> Any:
        if key not in self._loaded:
            self._loaded[key] = build()
        return self._loaded[key]

    def model(self, name: str | None, param: str = "model") -> LanguageModel:
        """The forward model a request names (None: the first registered one, else the packaged default)."""
        if name is None and self._models:
            name = next(iter(self._models))
        entry = self._models.get(name) if name is not None else None
        if isinstance(entry, LanguageModel):
            return entry
        if entry is None and name is not None and not self.allow_paths:
            raise InvalidRequest(param, f"Unknown model {name!r}; choose one of {', '.join(self.model_names)}.")
        target = entry if entry is not None else name
        with blame(param):
            return self._cached(("model", target), lambda: self.loader(target, self.device))

    def reverse_model(self, spec: str, param: str = "reverse_model") -> ReverseModel:
        """The one place a reverse-trained model is loaded (direction tags and mode ride along)."""
        from hindsight.reverse.models import as_reverse_model, load_reverse_model, resolve_reverse_dir

        entry = self._reverse.get(spec)
        if isinstance(entry, (LanguageModel, ReverseModel)):
            return as_reverse_model(entry)
        if entry is None and not self.allow_paths:
            raise InvalidRequest(param, f"Unknown reverse model {spec!r}; choose one of "
                                        f"{', '.join(sorted(self._reverse)) or 'none'}.")
        target = str(entry if entry is not None else spec)
        with blame(param):
            resolve_reverse_dir(target)
            return self._cached(("reverse", target), lambda: load_reverse_model(target, device=self.device))

    def twist(self, spec: str, lm: LanguageModel, param: str = "twist") -> Any:
        """A twist head by registered name (or by file, where paths are allowed), attached to ``lm``."""
        from hindsight.twists.checkpoint import load_twist

        path = self._twists.get(spec)
        if path is None and not self.allow_paths:
            raise InvalidRequest(param, f"Unknown twist {spec!r}; choose one of "
                                        f"{', '.join(sorted(self._twists)) or 'none'}.")
        target = path if path is not None else Path(spec)
        with blame(param):
            return load_twist(target, device=lm.device, lm=lm)[0]

    def file(self, path: str, param: str, what: str) -> Path:
        """A local file a request names: allowed only where paths are, and it must exist."""
        if not self.allow_paths:
            raise InvalidRequest(param, f"This server does not read files; send the {what} in the request.")
        p = Path(path).expanduser()
        if not p.is_file():
            raise InvalidRequest(param, f"The {what} file {path} does not exist.")
        return p

    def scorer(self, name: str, task: str, model: str | None, reverse_model: str | None) -> Any:
        """A TRLM pair scorer: reverse scorers run on the reverse model, the others on the forward model."""
        from hindsight.api import checks
        from hindsight.reverse.scorers import make_scorer

        checks.scorer(name, reverse_model, task)
        rev = self.reverse_model(reverse_model) if name.partition("@")[0] in checks.REVERSE_SCORERS else None
        lm = rev.lm if rev is not None else self.model(model)
        with blame("scorer"):
            return make_scorer(name, lm, task=task, reverse_lm=rev)
