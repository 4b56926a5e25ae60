"""Checks on a CUDA device: the engine and the samplers give the CPU's answers there, in float32 exactly and in
the default bfloat16 within rounding, and nothing lands on the wrong device. Not a test (CI has no GPU).
Every GPU check runs under both KV layouts (``shared``: the prompt's cache once, two-part attention; ``per-row``)
against the CPU's per-row engine.

    PYTHONPATH=src python bench/cuda_check.py [--smol DIR]

``--smol DIR``: a checkpoint directory (config + tokenizer are enough; weights are drawn at random when absent)
with the default model's architecture, used for the speed rows: decode and SMC benchmarks on the GPU.
Prints one line per check and exits non-zero if any fails.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from hindsight.lm.cascade import SharedPrefixCache
from hindsight.lm.hf import load_checkpoint
from hindsight.lm.toy import save_checkpoint, tiny_model, toy_model
from hindsight.potentials import parse_potential
from hindsight.samplers.smc import conditional_smc, run_smc
from hindsight.twists.heads import make_head

FAILED: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x.double().cpu() - y.double().cpu()).abs().max()) for x, y in zip(a, b))


def engine_checks(cpu, gpu, label: str, tol: float) -> None:
    prompt = cpu.encode("abca" if cpu.vocab_size < 10 else "hello there")
    conts = [cpu.encode(s) for s in (["b", "cc", "abc"] if cpu.vocab_size < 10 else ["ab", "the cat", "zz top"])]
    d = max_diff(cpu.score([prompt] * 3, conts), gpu.score([prompt] * 3, conts))
    check(f"{label}: score", d < tol, f"max |diff| {d:.2e}")
    # start / step / select on the GPU against the CPU's
    sc, sg = cpu.start(prompt, 3), gpu.start(prompt, 3)
    toks = torch.tensor([0, 1, 2]) % cpu.vocab_size
    cpu.step(sc, toks)
    gpu.step(sg, toks.to(gpu.device))
    sc, sg = cpu.select(sc, [2, 2, 0]), gpu.select(sg, [2, 2, 0])
    cpu.step(sc, toks)
    gpu.step(sg, toks.to(gpu.device))
    d = max_diff([sc.logprobs.exp()], [sg.logprobs.float().exp()])  # probabilities: bf16 blurs tiny ones' logs
    check(f"{label}: start/step/select", d < tol / 4, f"max |diff| of next-token probabilities {d:.2e}")
    check(f"{label}: hidden on device", sg.hidden.device.type == gpu.device.type and bool(torch.isfinite(sg.logprobs).all()))
    check(f"{label}: layout", isinstance(sg.cache, SharedPrefixCache) == (gpu.kv_layout == "shared"), gpu.kv_layout)
    lp = gpu.extend(sg, torch.stack([toks, toks], 1).to(gpu.device))
    ref = cpu.score([prompt + r.tolist() for r in sc.tokens], [[int(t)] * 2 for t in toks])
    d = max_diff([lp.exp()], [torch.stack(ref).exp()])
    check(f"{label}: extend after select", d < tol / 4, f"max |diff| of probabilities {d:.2e}")
    a = cpu.generate(prompt, n=4, max_tokens=6, seed=3)
    b = gpu.generate(prompt, n=4, max_tokens=6, seed=3)
    same = [x.tokens for x in a] == [y.tokens for y in b]
    check(f"{label}: seeded generate", same or tol > 1e-3,
          "same tokens on both devices" if same else "tokens differ (expected only in bf16)")


def smc_checks(cpu, gpu, label: str, tol: float) -> None:
    prompt = cpu.encode("ab" if cpu.vocab_size < 10 else "once upon")
    pot = parse_potential("regex:c" if cpu.vocab_size < 10 else "regex:e")
    for twisted in (False, True):
        heads = {}
        for lm in (cpu, gpu):
            torch.manual_seed(0)  # the same weights on both devices: initialise on the CPU, then move
            h = make_head("tied", lm.hidden_size, lm.vocab_size, rank=4)
            torch.nn.init.normal_(h.up.weight, std=0.5)
            torch.nn.init.normal_(h.direction, std=0.5)
            heads[lm] = h.to(lm.device).attach(lm) if twisted else None
        rc = run_smc(cpu, prompt, pot, 16, 5, twist=heads[cpu], seed=1)
        rg = run_smc(gpu, prompt, pot, 16, 5, twist=heads[gpu], seed=1)
        name = f"{label}: {'twisted' if twisted else 'bootstrap'} SMC log Z"
        finite = math.isfinite(rg.log_z) or not math.isfinite(rc.log_z)
        close = abs(rc.log_z - rg.log_z) < max(tol * 100, 1e-4) if math.isfinite(rc.log_z) else True
        check(name, finite and (close or tol > 1e-3), f"cpu {rc.log_z:.5f} gpu {rg.log_z:.5f}")
        ref = rc.sequences[0]
        up = conditional_smc(gpu, prompt, pot, ref, 16, 5, twist=heads[gpu], seed=2).log_z
        check(f"{label}: conditional SMC runs", not math.isnan(up), f"log Z-hat {up:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smol", default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--random-out", default="/tmp/smol-random", help="where the random-weight model is written")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of this script where there is no GPU")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (dry run)"
    print(f"device {name} torch {torch.__version__}", flush=True)
    tmp = Path(tempfile.mkdtemp())
    for make, name in ((toy_model, "toy"), (tiny_model, "tiny")):
        save_checkpoint(make(), tmp / name)
        cpu = load_checkpoint(tmp / name, device="cpu")
        cpu.kv_layout = "per-row"  # the reference
        for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 0.1)):
            gpu = load_checkpoint(tmp / name, device=args.device, dtype=dtype)
            for layout in ("shared", "per-row"):
                gpu.kv_layout = layout
                label = f"{name} {str(dtype).split('.')[-1]} {layout}"
                engine_checks(cpu, gpu, label, tol)
                smc_checks(cpu, gpu, label, tol)
    if args.smol:
        src = Path(args.smol)
        model_dir = src
        if not any(src.glob("*.safetensors")):
            from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

            torch.manual_seed(0)
            model_dir = Path(args.random_out)
            m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src))
            m.save_pretrained(model_dir)
            AutoTokenizer.from_pretrained(src).save_pretrained(model_dir)
            print(f"random weights with {src.name}'s architecture in {model_dir}", flush=True)
        bench = Path(__file__).resolve().parent
        long = ["--prompt-tokens", "512", "--generate-repeats", "1"]
        for script, extra in (("decode.py", []), ("smc.py", ["--potential", "regex:the"]),
                              ("decode.py", ["--n", "64"]), ("smc.py", ["--particles", "64", "--potential", "regex:the"]),
                              ("memory.py", ["--n", "256"]), ("memory.py", ["--n", "1024"]),
                              ("decode.py", ["--n", "256", *long]), ("decode.py", ["--n", "1024", *long])):
            reps = [] if script == "memory.py" else ["--repeats", str(args.repeats)]
            cmd = [sys.executable, str(bench / script), "--model", str(model_dir), *reps, *extra]
            print("$", " ".join(cmd[1:]), flush=True)
            r = subprocess.run(cmd, capture_output=True, text=True)
            print(r.stdout.strip(), flush=True)
            tail = r.stderr.strip().splitlines()[-1:] if r.returncode else []
            check(f"bench {script} {' '.join(extra)}", r.returncode == 0, " ".join(tail))
    print(f"{len(FAILED)} failed" + (f": {', '.join(FAILED)}" if FAILED else ""))
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
