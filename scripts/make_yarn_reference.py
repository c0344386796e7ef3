#!/usr/bin/env python3
"""YaRN references from transformers: the tiny Qwen3 fixture (tests/fixtures/archs/qwen3) with its
config's rope_parameters set to YaRN, for several parameter sets; per set, transformers' inverse
frequencies and attention factor (`ROPE_INIT_FUNCTIONS["yarn"]`) and the surprisal of the fixture's
sequences run with that config (float32, eager attention). Writes tests/fixtures/rope/yarn.json.

Pinned: Python 3.11, torch 2.15.0 (CPU), transformers 5.25.0.

  HF_HUB_OFFLINE=1 python scripts/make_yarn_reference.py
"""
import json
import os

import numpy as np
import torch
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "archs", "qwen3")
OUT = os.path.join(ROOT, "tests", "fixtures", "rope", "yarn.json")

CASES = {
    # Qwen3's documented YaRN setting, scaled to the fixture's 128 positions.
    "qwen3": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
    # gpt-oss's shape: no truncation of the correction range, its betas.
    "untruncated": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 16,
                    "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False},
    # DeepSeek-style mscale ratio, and an explicit attention factor.
    "mscale": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
               "mscale": 0.707, "mscale_all_dim": 1.0},
    "attention_factor": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64,
                         "attention_factor": 1.25, "beta_fast": 16.0, "beta_slow": 2.0},
}


def main():
    torch.set_num_threads(2)
    ref = json.load(open(os.path.join(FIXTURE, "reference.json")))
    out = {"meta": {"transformers": transformers.__version__, "torch": torch.__version__,
                    "model": "tests/fixtures/archs/qwen3"}, "cases": {}}
    for name, params in CASES.items():
        cfg = transformers.AutoConfig.from_pretrained(FIXTURE)
        cfg.rope_parameters = dict(params, rope_theta=cfg.rope_parameters["rope_theta"])
        inv, attention = ROPE_INIT_FUNCTIONS["yarn"](cfg, "cpu")
        model = transformers.AutoModelForCausalLM.from_pretrained(
            FIXTURE, config=cfg, attn_implementation="eager", dtype=torch.float32).eval()
        seqs = {}
        for seq, s in ref["sequences"].items():
            ids = s["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
            seqs[seq] = {"input_ids": ids, "surprisal_bits": [None] + [
                float(f"{-logp[i - 1, ids[i]] / np.log(2):.7g}") for i in range(1, len(ids))]}
        out["cases"][name] = {"rope_parameters": params,
                              "inv_freq": [float(x) for x in inv.numpy().astype(np.float32)],
                              "attention_factor": float(attention), "sequences": seqs}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
