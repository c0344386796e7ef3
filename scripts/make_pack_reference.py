#!/usr/bin/env python3
"""Reference windows for `prism batch --pack`: SAELens's own concatenation.

    /opt/refenv/bin/python scripts/make_pack_reference.py [--seed N] > tests/fixtures/pack/sae_lens.json

Pinned: sae-lens 6.54.12, torch 2.15.0 (CPU). Random token streams (some documents already
starting with the BOS id, some longer than a window, some of one token) go through
`sae_lens.tokenization_and_batching.concat_and_batch_sequences` with BOS as the begin-batch and
separator token (what SAELens's ActivationsStore uses when it prepends BOS), and without any
(prepend_bos off). The windows it yields are the reference; SAELens drops the last, shorter one.
"""

import argparse
import json
import random

import sae_lens
import torch
from sae_lens.tokenization_and_batching import concat_and_batch_sequences

BOS = 1


def case(rng, context, bos):
    docs = []
    for _ in range(rng.randint(1, 12)):
        n = rng.choice([1, 2, 3, rng.randint(1, 3 * context)])
        d = [rng.randint(2, 50) for _ in range(n)]
        if rng.random() < 0.2:
            d[0] = BOS
        docs.append(d)
    windows = concat_and_batch_sequences(
        iter(torch.tensor(d, dtype=torch.long) for d in docs),
        context,
        begin_batch_token_id=BOS if bos else None,
        sequence_separator_token_id=BOS if bos else None,
    )
    return {
        "context": context,
        "bos": BOS if bos else None,
        "docs": docs,
        "windows": [w.tolist() for w in windows],
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=5)
    a = p.parse_args()
    rng = random.Random(a.seed)
    cases = [case(rng, ctx, bos) for ctx in [2, 3, 5, 8, 16] for bos in [True, False] for _ in range(6)]
    meta = {"sae_lens": sae_lens.__version__, "torch": torch.__version__, "seed": a.seed}
    print(json.dumps({"meta": meta, "cases": cases}, separators=(",", ":")))


if __name__ == "__main__":
    main()
