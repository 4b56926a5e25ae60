"""Peak memory of a shared prompt: ``start(prompt of P tokens, n)`` then S steps, for n=1 and n=N, under both KV
layouts (``shared``: the prompt's cache once; ``per-row``: transformers' cache, one prompt copy per row), same run.

Each configuration runs in a fresh subprocess so that peaks do not mix; on CUDA it reads
``torch.cuda.max_memory_allocated``, on CPU the process's peak resident set (VmHWM) above the loaded model.
Target: shared, P=512, N=64, S=32: <= 150 MB above the model.

    python bench/memory.py [--prompt-tokens 512] [--n 64] [--steps 32]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM), so loading the model does not count."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(model: str | None, prompt_tokens: int, n: int, steps: int, layout: str) -> dict:
    from hindsight.lm import load_model

    lm = load_model(model)
    lm.kv_layout = layout
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 20000, (prompt_tokens,), generator=gen).tolist()
    cuda = lm.device.type == "cuda"
    lm.step(lm.start(ids[:8], 1), torch.tensor([100]))  # touch every weight page (safetensors are mmapped)
    base = torch.cuda.memory_allocated() if cuda else current_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()
    state = lm.start(ids, n)
    for _ in range(steps):
        lm.step(state, torch.randint(100, 20000, (n,), generator=gen))
    peak = torch.cuda.max_memory_allocated() if cuda else peak_rss()
    cfg = lm.model.config
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    kv_per_token *= torch.finfo(next(lm.model.parameters()).dtype).bits // 8
    return {"n": n, "layout": lm.kv_layout, "peak_above_model_mb": (peak - base) / 2**20,
            "kv_cache_mb": kv_per_token * n * (prompt_tokens + steps) / 2**20,
            "shared_prompt_kv_mb": kv_per_token * (prompt_tokens + n * steps) / 2**20, "device": str(lm.device)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--layout", default="shared", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.model, args.prompt_tokens, args.child, args.steps, args.layout)))
        return
    rows = {}
    for layout in ("per-row", "shared"):
        for n in (1, args.n):
            cmd = [sys.executable, __file__, "--child", str(n), "--prompt-tokens", str(args.prompt_tokens),
                   "--steps", str(args.steps), "--layout", layout] + (["--model", args.model] if args.model else [])
            rows[layout, n] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    first = rows["shared", 1]
    print(f"prompt={args.prompt_tokens} tokens, steps={args.steps}, device={first['device']}; KV cache if held "
          f"per row: {rows['per-row', args.n]['kv_cache_mb']:.1f} MB, with the prompt once: "
          f"{first['shared_prompt_kv_mb'] if args.n == 1 else rows['shared', args.n]['shared_prompt_kv_mb']:.1f} MB")
    for (layout, n), r in rows.items():
        print(f"  {layout:<8} n={n:<4} peak above model {r['peak_above_model_mb']:8.1f} MB   (engine used {r['layout']})")
    peak = {k: max(r["peak_above_model_mb"], 1e-9) for k, r in rows.items()}
    print(f"RATIO peak n={args.n} / n=1: per-row {peak['per-row', args.n] / peak['per-row', 1]:.1f}, "
          f"shared {peak['shared', args.n] / peak['shared', 1]:.1f}")
    print(f"RATIO peak per-row/shared at n={args.n} = {peak['per-row', args.n] / peak['shared', args.n]:.1f}")


if __name__ == "__main__":
    main()
