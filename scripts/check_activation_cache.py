#!/usr/bin/env python3
"""Checks a `prism batch --pack --sites ...` activation cache with the field's own readers.

    /opt/refenv/bin/python scripts/check_activation_cache.py OUT_DIR MODEL [--gguf FILE] [--tol T]

Pinned: sae-lens 6.54.12, datasets 5.2.0, transformers 5.25.0, torch 2.15.0 (CPU).
1. `datasets.load_from_disk(OUT_DIR/activations)` opens it; every hook column's Features is
   Array2D(context, d_in) and token_ids a fixed-length int32 list.
2. SAELens's ActivationsStore (no model, `cached_activations_path`) reads every row of every hook
   through its own cached-activation path (`_load_raw_llm_batch_from_cached`).
3. transformers runs each row's token_ids (MODEL a Hugging Face folder, or with --gguf a GGUF file
   in MODEL's folder through transformers' GGUF loader) and its activations at the same sites
   (hidden_states for resid_pre/resid_post, forward hooks on the layer's mlp / self_attn for
   hook_mlp_out / hook_attn_out) are compared: the largest difference (beyond f16's rounding of
   each value, for an f16 cache), relative to the site's RMS, must be under --tol. Prints one JSON
   line per hook; exits 1 if one is over.
"""

import argparse
import json
import re
import sys

import datasets
import torch
from sae_lens.training.activations_store import ActivationsStore
from transformers import AutoModelForCausalLM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("model")
    p.add_argument("--gguf")
    p.add_argument("--tol", type=float, default=2e-3)
    a = p.parse_args()
    cache = f"{a.out}/activations"
    ds = datasets.load_from_disk(cache)
    hooks = [c for c in ds.column_names if c != "token_ids"]
    ctx = ds.features["token_ids"].length
    kw = dict(gguf_file=a.gguf) if a.gguf else {}
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, **kw).eval()
    layers = model.model.layers
    ok = True
    for hook in hooks:
        shape = ds.features[hook].shape
        assert shape[0] == ctx, (hook, shape)
        store = ActivationsStore(
            model=None, dataset=None, streaming=False, hook_name=hook, hook_head_index=None,
            context_size=ctx, d_in=shape[1], n_batches_in_buffer=1,
            total_training_tokens=len(ds) * ctx, store_batch_size_prompts=len(ds),
            train_batch_size_tokens=ctx, prepend_bos=True, normalize_activations="none",
            device="cpu", dtype="float32", cached_activations_path=cache,
        )
        acts, ids = store._load_raw_llm_batch_from_cached(raise_on_epoch_end=False)
        acts = acts.reshape(len(ds), ctx, -1).float()
        ids = ids.reshape(len(ds), ctx).long()
        m = re.fullmatch(r"blocks\.(\d+)\.hook_(resid_pre|resid_post|mlp_out|attn_out)", hook)
        assert m, f"{hook}: not a hook this check knows"
        layer, site = int(m.group(1)), m.group(2)
        got = []
        captured = {}
        module = {"mlp_out": lambda: layers[layer].mlp, "attn_out": lambda: layers[layer].self_attn}
        handle = None
        if site in module:
            def grab(_m, _i, out):
                captured["x"] = out[0] if isinstance(out, tuple) else out
            handle = module[site]().register_forward_hook(grab)
        with torch.no_grad():
            for row in ids:
                o = model(row[None], output_hidden_states=True)
                if site == "resid_pre":
                    got.append(o.hidden_states[layer][0])
                elif site == "resid_post":
                    assert layer + 1 < len(layers), "the last block's output is normed in hidden_states"
                    got.append(o.hidden_states[layer + 1][0])
                else:
                    got.append(captured["x"][0])
        if handle:
            handle.remove()
        want = torch.stack(got)
        rms = want.pow(2).mean().sqrt().item()
        diff = (acts - want).abs()
        # f16 rounds each value to 11 significant bits: half an ulp of |x| on top of --tol.
        half_ulp = want.abs() * 2.0**-11 if ds.features[hook].dtype == "float16" else 0.0
        excess = (diff - half_ulp).clamp(min=0).max().item() / rms
        passed = excess < a.tol
        ok &= passed
        print(json.dumps({"hook": hook, "dtype": ds.features[hook].dtype, "rows": len(ds),
                          "context": ctx, "d_in": shape[1], "max_abs_diff": diff.max().item(),
                          "rms": rms, "rel_beyond_rounding": excess, "ok": passed}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
