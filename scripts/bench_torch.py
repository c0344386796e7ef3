"""PyTorch + transformers timings for scripts/bench-cpu.sh: the same GGUF, dequantized to float32
by transformers' own loader, the same token ids Prism runs, and the same outputs (surprisal,
entropy and the top 5 at every position). Prints one JSON object."""

import argparse
import json
import os
import time

import torch
from transformers import AutoModelForCausalLM


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--ids", required=True, help="JSON list of token ids (cycled to each length)")
    ap.add_argument("--tokens", default="128,512")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--generate", type=int, default=0, help="also time greedy generation of N tokens")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    base = json.loads(args.ids)
    folder, name = os.path.split(os.path.abspath(args.gguf))
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "points": []}
    for impl in ("sdpa", "eager"):
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32, attn_implementation=impl
        ).eval()
        for n in [int(t) for t in args.tokens.split(",")]:
            ids = torch.tensor([[base[i % len(base)] for i in range(n)]])

            def step():
                with torch.inference_mode():
                    logits = model(ids).logits[0].float()
                    lp = torch.log_softmax(logits, dim=-1)
                    surprisal = -lp[:-1].gather(1, ids[0, 1:, None]) / 0.6931471805599453
                    entropy = -(lp.exp() * lp).sum(-1) / 0.6931471805599453
                    top = torch.topk(lp, 5, dim=-1)
                    return surprisal, entropy, top

            for _ in range(2):
                step()
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                step()
                times.append((time.perf_counter() - t) * 1e3)
            out["points"].append({"attention": impl, "tokens": n, "median_ms": median(times)})
        if args.generate and impl == "sdpa":
            prompt = torch.tensor([base[:8]])
            with torch.inference_mode():
                model.generate(prompt, max_new_tokens=4, do_sample=False)
                t = time.perf_counter()
                g = model.generate(prompt, max_new_tokens=args.generate, min_new_tokens=args.generate, do_sample=False)
                s = time.perf_counter() - t
            out["generate"] = {"new_tokens": g.shape[1] - prompt.shape[1], "seconds": s, "tokens_per_s": (g.shape[1] - prompt.shape[1]) / s}
        del model
    print(json.dumps(out))


if __name__ == "__main__":
    main()
