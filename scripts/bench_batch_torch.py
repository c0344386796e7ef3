"""PyTorch + transformers doing what `prism batch` does, for scripts/bench-batch.sh: the same GGUF
(dequantized to float32 by transformers' own loader, its tokenizer converted from the GGUF), the
same corpus as a `datasets` Dataset, mapped one document at a time to the same per-token outputs
(surprisal, entropy, rank, top 5) and per-document bits, truncated to the same context. Prints one
JSON object: documents, tokens, seconds, tokens/s.

Pinned: torch 2.15.0 (CPU), transformers 5.25.0, datasets 5.2.0, gguf 0.19.0.
"""

import argparse
import json
import math
import os
import time

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--corpus", required=True, help="one document per line")
    ap.add_argument("--context", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    datasets.disable_progress_bars()
    folder, name = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    docs = [l for l in open(args.corpus, encoding="utf-8").read().split("\n") if l.strip()]
    ds = datasets.Dataset.from_dict({"text": docs})

    def score(row):
        ids = tok(row["text"], add_special_tokens=False)["input_ids"][: args.context]
        with torch.inference_mode():
            logits = model(torch.tensor([ids])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        p = logp.exp()
        entropy = -(p * logp).sum(-1) / math.log(2)
        target = torch.tensor(ids[1:])
        bits = -logp[:-1].gather(1, target[:, None])[:, 0] / math.log(2)
        rank = (logp[:-1] > logp[:-1].gather(1, target[:, None])).sum(-1) + 1
        top = torch.topk(p, 5, dim=-1)
        return {
            "ids": ids,
            "surprisal_bits": [None] + bits.tolist(),
            "entropy_bits": [None] + entropy[:-1].tolist(),
            "rank": [None] + rank.tolist(),
            "top_ids": top.indices.tolist(),
            "top_p": top.values.tolist(),
            "bits": float(bits.sum()),
            "tokens": len(ids),
        }

    t = time.perf_counter()
    out = ds.map(score, load_from_cache_file=False, keep_in_memory=True)
    secs = time.perf_counter() - t
    tokens = sum(out["tokens"])
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "documents": len(docs),
                      "tokens": tokens, "seconds": secs, "tokens_per_s": tokens / secs}))


if __name__ == "__main__":
    main()
