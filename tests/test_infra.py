"""hindsight.infra: the one cache root, seeded generator and atomic writes."""

import torch

from hindsight.infra import atomic_write, cache_root, replace_dir, seeded_generator, temp_path


def test_cache_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HINDSIGHT_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "a"
    monkeypatch.delenv("HINDSIGHT_CACHE")
    assert cache_root() == tmp_path / "x" / "hindsight"


def test_seeded_generator_repeats_and_unseeded_differs():
    a = torch.rand(4, generator=seeded_generator(3))
    assert torch.equal(a, torch.rand(4, generator=seeded_generator(3)))
    assert not torch.equal(a, torch.rand(4, generator=seeded_generator(4)))


def test_atomic_write_and_replace_dir(tmp_path):
    f = tmp_path / "sub" / "f.txt"
    atomic_write(f, "one")
    atomic_write(f, b"two")
    assert f.read_bytes() == b"two" and [p.name for p in f.parent.iterdir()] == ["f.txt"]  # no temp file left
    target = tmp_path / "d"
    for text in ("old", "new"):
        tmp = temp_path(target)
        tmp.mkdir()
        (tmp / "x").write_text(text)
        replace_dir(tmp, target)
    assert (target / "x").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["d", "sub"]
