"""Cached weights carry checksums: a damaged file is noticed on load (and re-converted with one warning), a
change the sampled hash misses is caught by the full check (`hindsight models --verify`), and NaN weights give
an error naming the model instead of output."""

import json

import pytest

from hindsight.errors import HindsightError
from hindsight.lm import checksums, registry
from hindsight.lm.toy import save_checkpoint, tiny_model


@pytest.fixture
def cached(tmp_path, monkeypatch):
    """A fake cache entry for the default model name (the tiny model's files) and a counting converter."""
    monkeypatch.setenv("HINDSIGHT_CACHE", str(tmp_path))
    calls = []

    def fake_convert(name, progress):
        calls.append(name)
        save_checkpoint(tiny_model(), registry.converted_dir(name))
        registry._write_manifest(name, checksums.manifest_entries(registry.converted_dir(name)))

    monkeypatch.setattr(registry, "_convert", fake_convert)
    registry.resolve(registry.DEFAULT_MODEL)
    assert calls == [registry.DEFAULT_MODEL]
    return registry.converted_dir(registry.DEFAULT_MODEL), calls


def test_manifest_records_every_file(cached):
    folder, _ = cached
    meta = json.loads((folder / "hindsight.json").read_text())
    assert "model.safetensors" in meta["files"] and meta["files"]["model.safetensors"]["size"] > 0
    assert registry.check_cached(registry.DEFAULT_MODEL) == []


def test_same_size_garbage_is_reconverted_with_one_warning(cached, capsys):
    folder, calls = cached
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\x00" * weights.stat().st_size)
    registry.resolve(registry.DEFAULT_MODEL)
    err = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln.lower()]
    assert len(err) == 1 and err[0].startswith("warning:") and "model.safetensors" in err[0]
    assert calls == [registry.DEFAULT_MODEL] * 2
    assert registry.check_cached(registry.DEFAULT_MODEL) == []


def test_full_verify_catches_what_sampling_misses(tmp_path):
    big = tmp_path / "w.bin"
    big.write_bytes(bytes(range(256)) * 8192)  # 2 MiB: sampled, not read whole
    entries = checksums.manifest_entries(tmp_path)
    data = bytearray(big.read_bytes())
    data[70_000] ^= 1  # between two sampled blocks
    big.write_bytes(bytes(data))
    assert checksums.problems(tmp_path, entries) == []
    assert checksums.problems(tmp_path, entries, full=True) == ["w.bin does not match its recorded sha256"]


def test_verify_reports_damage(cached):
    folder, _ = cached
    (folder / "tokenizer.json").write_text("{}")
    report = registry.verify()
    assert report[0]["ok"] is False and "tokenizer.json" in report[0]["problems"][0]


def test_nan_in_a_forward_names_the_model():
    import torch

    lm = tiny_model()
    with torch.no_grad():
        lm.model.model.norm.weight.fill_(float("nan"))
    lm.name = "broken-model"
    with pytest.raises(HindsightError, match="broken-model"):
        lm.generate("hi", max_tokens=2, seed=0)
