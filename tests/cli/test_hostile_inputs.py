"""Hostile but realistic command lines, run through the real console script in a subprocess.

Every case must end with exit code 2 and exactly one ``error:`` line on stderr (never a ``Traceback``); the
results-file cases must also leave the file byte-identical. Ctrl-C (SIGINT to a running evaluation) must end
with exit 130, one line, and every record already written kept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "hindsight"


def command() -> list[str]:
    """The installed console script when there is one (what users run), else ``python -m hindsight``."""
    return [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "hindsight"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("OMP_NUM_THREADS", "1")
    e["COLUMNS"] = "200"
    return e


def default_sigint() -> None:
    """Children of a background job inherit an ignored SIGINT; a user's terminal delivers it: restore that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(args: list[str | bytes], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    argv = [a if isinstance(a, bytes) else a.encode() for a in command() + list(args)]
    return subprocess.run(argv, cwd=cwd, env=env(), capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """The inputs the cases refer to as ``{name}``: a tiny model, damaged copies, binary and odd files."""
    import torch
    from safetensors.torch import load_file, save_file

    from hindsight.lm.toy import save_checkpoint, tiny_model

    root = tmp_path_factory.mktemp("hostile")
    tiny = root / "tiny"
    save_checkpoint(tiny_model(), tiny)
    trunc = root / "trunc"
    save_checkpoint(tiny_model(), trunc)
    weights = trunc / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    nan = root / "nanmodel"
    save_checkpoint(tiny_model(), nan)
    state = load_file(nan / "model.safetensors")
    key = next(k for k in state if k.endswith("norm.weight"))
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, nan / "model.safetensors", metadata={"format": "pt"})
    from hindsight.twists.heads import make_head

    head = make_head("linear", 32, 36)  # the tiny model's hidden size and vocabulary
    twist = {"format": "hindsight-twist-1", "config": head.config(), "state_dict": head.state_dict(), "meta": {}}
    torch.save({k: v for k, v in twist.items() if k != "config"}, root / "noconfig.twist")
    torch.save({**twist, "config": {**head.config(), "hidden_size": 576}}, root / "badshape.twist")
    other = make_head("linear", 48, 40)  # trained for another (small) model
    torch.save({**twist, "config": other.config(), "state_dict": other.state_dict()}, root / "other.twist")
    binary = root / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 40)
    (root / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)
    (root / "latin1.txt").write_bytes("caf\u00e9 cr\u00e8me\n".encode("latin-1"))
    (root / "blob.jsonl").write_bytes(bytes(range(256)) * 8)
    (root / "nofield.jsonl").write_text('{"id": "a", "text": "Cats purr."}\n{"id": "b", "words": "Dogs bark."}\n')
    (root / "folder").mkdir()
    (root / "bad.jsonl").write_bytes(b'{"id": 0}\n42\n')
    (root / "bin.jsonl").write_bytes(b'{"id": 0}\n\xff\xfe\n{"id": 1}\n')
    data = _preference_data(root, 3)
    _scifact_data(root, data)
    stamped = _stamped_results(root, tiny)
    empty = _preference_data(root / "empty", 0)
    return {"bad_results": str(root / "bad.jsonl"), "binary_results": str(root / "bin.jsonl"), "data": str(data), "empty_data": str(empty), **stamped,
            "tiny": str(tiny), "trunc": str(trunc), "nan": str(nan), "binary": str(binary), "root": str(root),
            "folder": str(root / "folder"), "png": str(root / "img.png"), "latin1": str(root / "latin1.txt"),
            "binary_jsonl": str(root / "blob.jsonl"), "noconfig": str(root / "noconfig.twist"),
            "badshape": str(root / "badshape.twist"), "other_twist": str(root / "other.twist"), "nofield": str(root / "nofield.jsonl")}


@dataclass
class Case:
    name: str
    args: list[str | bytes]
    match: str = ""  # a piece of the error line (case-insensitive)
    keep: list[str] = field(default_factory=list)  # files ({name}) that must be byte-identical afterwards


CASES = [
    Case("missing argument", ["generate"], "missing argument"),
    Case("unknown option", ["generate", "hi", "--bogus"], "--bogus"),
    Case("not a number", ["generate", "hi", "--n", "abc"], "--n"),
    Case("unknown command", ["nosuchcmd"], "nosuchcmd"),
    Case("a flag given a value", ["generate", "hi", "--json", "true"], "true"),
    Case("invalid UTF-8 in the prompt", ["generate", b"a\xff\xfeb", "--model", "{tiny}"], "utf-8"),
    Case("unknown device", ["generate", "hi", "--model", "{tiny}", "--device", "banana"], "banana"),
    Case("truncated safetensors", ["generate", "hi", "--model", "{trunc}"], "could not load"),
    Case("NaN in a forward pass", ["generate", "hi", "--model", "{nan}", "--max-tokens", "2"], "nanmodel"),
    Case("binary file to data convert", ["data", "convert", "hh-rlhf", "{binary}", "--out", "{root}/d"], "binary"),
    Case("wrong number of files", ["data", "convert", "truthfulqa", "{binary}", "--out", "{root}/d"], "2 file"),
    Case("unknown dataset", ["data", "convert", "mnist", "x", "--out", "{root}/d"], "mnist"),
    Case("data --out is a file", ["data", "convert", "hh-rlhf", "{binary}", "--out", "{binary}"], "not a folder",
         keep=["{binary}"]),
    Case("n past what fits", ["generate", "hi", "--model", "{tiny}", "--n", "100000000"], "at most 4096"),
    Case("seed 2**70", ["generate", "hi", "--model", "{tiny}", "--seed", str(2**70)], "--seed"),
    Case("temperature inf", ["generate", "hi", "--model", "{tiny}", "--temperature", "inf"], "--temperature"),
    Case("empty stop string", ["generate", "hi", "--model", "{tiny}", "--stop", ""], "--stop"),
    Case("empty texts to score", ["score", "", "", "--model", "{tiny}"], "empty"),
    Case("score past the context window", ["score", "Who?", "word " * 20000, "--model", "{tiny}"],
         "context window of 256 tokens"),
    Case("infinite tempering exponent", ["smc", "hi", "-p", "toxicity^1e999", "--model", "{tiny}"], "finite"),
    Case("binary corpus", ["retrieve", "q", "--corpus", "{binary}"], "blob.bin"),
    Case("PNG as corpus", ["retrieve", "q", "--corpus", "{png}"], "img.png"),
    Case("latin-1 corpus", ["retrieve", "q", "--corpus", "{latin1}"], "latin1.txt"),
    Case("binary .jsonl corpus", ["retrieve", "q", "--corpus", "{binary_jsonl}"], "blob.jsonl"),
    Case("corpus record with no text field", ["retrieve", "q", "--corpus", "{nofield}"], "record 2"),
    Case("PNG as the article", ["cite", "A sentence.", "--article", "{png}", "--model", "{tiny}"], "img.png"),
    Case("latin-1 article", ["cite", "A sentence.", "--article", "{latin1}", "--model", "{tiny}"], "latin1.txt"),
    Case("PNG as training data", ["reverse", "train", "--out", "{root}/rev", "--data", "{png}", "--init", "{tiny}",
                                  "--steps", "1"], "img.png"),
    Case("binary .jsonl training data", ["reverse", "train", "--out", "{root}/rev", "--data", "{binary_jsonl}",
                                         "--init", "{tiny}", "--steps", "1"], "blob.jsonl"),
    Case("twist file without a config", ["smc", "hi", "-p", "toxicity", "--model", "{tiny}", "--twist", "{noconfig}",
                                         "--max-tokens", "2"], "no twist configuration"),
    Case("twist weights of another shape", ["smc", "hi", "-p", "toxicity", "--model", "{tiny}", "--twist",
                                            "{badshape}", "--max-tokens", "2"], "needs (36, 576)"),
    Case("twist for another model", ["smc", "hi", "-p", "toxicity", "--model", "{tiny}", "--twist", "{other_twist}",
                                     "--max-tokens", "2"], "hidden 48"),
    Case("bounds with a twist of another shape", ["bounds", "-p", "toxicity", "--prompt", "x", "--model", "{tiny}",
                                                  "--twist", "{badshape}", "--max-tokens", "2"], "badshape.twist"),
    Case("max-words 0", ["retrieve", "q", "--corpus", "{binary}", "--max-words", "0"], "--max-words"),
    Case("bounds --kl-samples 0", ["bounds", "-p", "toxicity", "--prompt", "x", "--kl-samples", "0",
                                   "--model", "{tiny}"], "--kl-samples"),
    Case("results file with a bare 42", ["eval", "preferences", "--data", "{data}", "--model", "{tiny}",
                                         "--scorers", "forward", "--out", "{bad_results}"], "line 2",
         keep=["{bad_results}"]),
    Case("results file with non-UTF-8 bytes", ["eval", "preferences", "--data", "{data}", "--model", "{tiny}",
                                               "--scorers", "forward", "--out", "{binary_results}"], "utf-8",
         keep=["{binary_results}"]),
    Case("--limit 0", ["eval", "preferences", "--data", "{data}", "--model", "{tiny}", "--scorers", "forward",
                       "--limit", "0", "--out", "{root}/limit0.jsonl"], "--limit must be at least 1"),
    Case("--limit -3", ["eval", "preferences", "--data", "{data}", "--model", "{tiny}", "--scorers", "forward",
                        "--limit", "-3", "--out", "{root}/limit3.jsonl"], "--limit must be at least 1"),
    Case("--limit 0 before looking for data", ["eval", "rain-hh", "--data", "{root}/nodata", "--limit", "0",
                                               "--out", "{root}/rain0.jsonl"], "--limit"),
    Case("an empty dataset", ["eval", "preferences", "--data", "{empty_data}", "--model", "{tiny}", "--scorers",
                              "forward", "--out", "{root}/empty.jsonl"], "no items"),
    Case("--fit-alpha malformed", ["eval", "retrieval", "--data", "{data}", "--model", "{tiny}", "--fusion", "minmax",
                                   "--fit-alpha", "BAD", "--out", "{root}/fit.jsonl"], "--fit-alpha"),
    Case("--fit-alpha malformed, no data", ["eval", "retrieval", "--data", "{root}/nodata", "--fusion", "minmax",
                                            "--fit-alpha", "1:x", "--out", "{root}/fit.jsonl"], "--fit-alpha"),
    Case("--fit-alpha past the claims", ["eval", "retrieval", "--data", "{data}", "--model", "{tiny}", "--fusion",
                                         "minmax", "--fit-alpha", "100:200", "--out", "{root}/fit.jsonl"],
         "selects no claims"),
    Case("results of another model's weights", ["eval", "preferences", "--data", "{data}", "--model", "{tiny}",
                                                "--scorers", "forward", "--out", "{other_model_results}"],
         "weights 0000", keep=["{other_model_results}"]),
    Case("results of another --max-words", ["eval", "retrieval", "--data", "{data}", "--model", "{tiny}",
                                            "--scorers", "forward", "--out", "{max_words_results}"],
         "max_words=50, not 200", keep=["{max_words_results}"]),
    Case("--out is a folder", ["eval", "preferences", "--data", "{data}", "--model", "{tiny}", "--scorers",
                               "forward", "--out", "{folder}"], "is a folder"),
]
if not __import__("torch").cuda.is_available():
    CASES.append(Case("cuda on a CPU-only torch", ["generate", "hi", "--model", "{tiny}", "--device", "cuda"],
                      "not available"))


def _fill(arg: str | bytes, files: dict[str, str]) -> str | bytes:
    return arg.format(**files) if isinstance(arg, str) else arg


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_error_line(case: Case, files, tmp_path):
    kept = {p: Path(p).read_bytes() for p in (_fill(k, files) for k in case.keep)}
    res = run([_fill(a, files) for a in case.args], cwd=tmp_path)
    err = res.stderr.decode("utf-8", "replace")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert res.returncode == 2, (res.returncode, err)
    assert len([ln for ln in lines if ln.startswith("error:")]) == 1, err
    assert lines[-1].startswith("error:"), err
    assert case.match.lower() in lines[-1].lower(), err
    for p, before in kept.items():
        assert Path(p).read_bytes() == before, f"{p} changed"


def test_version_and_help_show_no_bool_metavar(tmp_path):
    from hindsight import __version__

    res = run(["--version"], cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.decode().strip() == f"hindsight {__version__}"
    res = run(["generate", "--help"], cwd=tmp_path)
    assert res.returncode == 0 and "--json" in res.stdout.decode()
    assert "<bool>" not in res.stdout.decode()
    res = run([], cwd=tmp_path)
    assert res.returncode == 0 and "generate" in res.stdout.decode()


def _preference_data(root: Path, n: int) -> Path:
    folder = root / "data" / "alpaca_eval"
    folder.mkdir(parents=True)
    rows = [{"id": i, "instruction": f"Say something about {i}.", "output_1": "It is a number.",
             "output_2": "Numbers are fine.", "preference": 1.0 + i % 2}
            for i in range(n)]
    (folder / "pairwise_preferences_alpaca7b_vs_text_davinci_003.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows))
    return root / "data"


def _scifact_data(root: Path, data: Path) -> None:
    """A tiny SciFact in the layout ``hindsight data convert scifact`` writes (made by that converter)."""
    from hindsight.records.convert import convert

    raw = root / "scifact_raw"
    raw.mkdir()
    claims = [{"id": i, "claim": f"Claim {i} about cells.", "cited_doc_ids": [10 + i], "evidence": {}}
              for i in range(3)]
    corpus = [{"doc_id": 10 + i, "title": f"Paper {i}", "abstract": [f"Cells divide {i} times."]} for i in range(4)]
    for name, rows in (("claims_dev.jsonl", claims), ("corpus.jsonl", corpus)):
        (raw / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    convert("scifact", [str(raw / "claims_dev.jsonl"), str(raw / "corpus.jsonl")], data)


def _stamped_results(root: Path, tiny: Path) -> dict[str, str]:
    """Results files written by another model's weights, and by the tiny model with another --max-words."""
    from hindsight.experiments.runner import weights_fingerprint

    other = root / "other_model.jsonl"
    other.write_text(json.dumps({"id": 0, "preference": 1.0, "len_1": 1, "len_2": 1, "scores": {"forward": [
        [-1.0, 1], [-2.0, 1]]}, "produced_by": {"model": "other", "model_weights": "0000", "reverse_model": None}})
                     + "\n")
    words = root / "max_words.jsonl"
    stamp = {"model": str(tiny), "model_weights": weights_fingerprint(str(tiny)), "reverse_model": None,
             "settings": {"max_words": 50, "top_k": 20}}
    words.write_text(json.dumps({"id": 0, "relevant": ["10"], "bm25": ["10"], "bm25_scores": [1.0], "top_k": 20,
                                 "scores": {"forward": [[-1.0, 3]]}, "produced_by": stamp}) + "\n")
    return {"other_model_results": str(other), "max_words_results": str(words)}


def test_ctrl_c_during_an_evaluation_exits_130_and_keeps_records(files, tmp_path):
    data = _preference_data(tmp_path, 3000)
    out = tmp_path / "prefs.jsonl"
    argv = command() + ["eval", "preferences", "--data", str(data), "--model", files["tiny"], "--scorers",
                        "forward,trlm-fo", "--out", str(out)]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 900  # a loaded machine imports torch slowly
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_file() and out.read_text().count("\n") >= 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        before = out.read_text().splitlines() if out.is_file() else []
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:  # never leave the evaluation running, whatever failed above
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err.decode("utf-8", "replace")
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("interrupted:"), err
    after = out.read_text().splitlines() if out.is_file() else []
    assert len(before) >= 1 and after[: len(before)] == before and all(json.loads(line) for line in after)


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    """SIGINT while torch is still being imported: one line and exit 130, no KeyboardInterrupt traceback."""
    proc = subprocess.Popen(command() + ["generate", "--help"], cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=default_sigint)
    try:
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err.decode("utf-8", "replace")
    if proc.returncode in (0, -signal.SIGINT):
        pytest.skip("the signal arrived after start-up finished, or before Python itself had started")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted:"), err
