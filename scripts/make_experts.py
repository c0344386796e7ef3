#!/usr/bin/env python3
"""Tiny random-weight mixture-of-experts checkpoints (Qwen3-MoE) with transformers references,
router probabilities and chosen experts included.

For each architecture it writes tests/fixtures/archs/<arch>/:
  config.json, model.safetensors, tokenizer.json, tokenizer_config.json   the HF folder, its experts
                            stored one tensor per expert (`mlp.experts.E.gate_proj.weight`, as the
                            checkpoints on the Hub are); transformers 5 fuses them on load
  <arch>-<TYPE>.gguf        llama.cpp's convert_hf_to_gguf.py (F32), then llama-quantize TYPE
  reference.json            transformers (float32, eager attention) on the HF folder
  dequant_checks.json       gguf-py's values for the first blocks of one tensor of each block type
  reference-<TYPE>.json     transformers' own GGUF loader (`from_pretrained(.., gguf_file=..)`,
                            which dequantizes with gguf-py) on that file, into the folder's config
                            (its GGUF config map for qwen3_moe lacks expert_feed_forward_length)
Each sequence's reference holds, beyond the block-shape fields of make_block_shapes.py, per MoE
layer and token: the router's softmax over all experts (`router_probs`), the chosen experts in
transformers' top-k order with their weights after renormalisation (`experts`, `weights`), and
the top-k margin (the k-th largest probability minus the next; where it is below 1e-4 float
rounding may pick either expert); and the surprisal with layer 0's most used expert ablated
(`ablate_expert`: its routing weight zeroed at every position, the others kept).
The F32 GGUF is checked here against the HF reference (logits within 1e-5) and not kept.

Pinned: Python 3.11, torch 2.15.0 (CPU), transformers 5.25.0, safetensors 0.8.0, numpy 2.4.6,
gguf 0.19 (transformers' GGUF loader); llama.cpp commit 0c1e570 (the copy in the llama-cpp-python
0.3.36 sdist, vendor/llama.cpp) for the converter and llama-quantize.

  LLAMA_CPP_DIR=/path/to/llama.cpp LLAMA_QUANTIZE=/path/to/llama-quantize \
      HF_HUB_OFFLINE=1 python scripts/make_experts.py [--seed-offset N] [OUT_DIR]

Conventions are make_block_shapes.py's (vocab 512, hidden 256, norm weights 1 + N(0, 0.1),
matrices N(0, 0.1), an untied embedding N(0, 0.05)); the router is N(0, 0.3) so that tokens
prefer some experts clearly; the tokenizer is the qwen3 fixture's.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_block_shapes as blocks  # noqa: E402

FIXTURES = blocks.FIXTURES

# name -> (config class, config kwargs, tokenizer fixture, llama.cpp pre-tokenizer, seed, quants)
ARCHS = {
    "qwen3moe": (
        "Qwen3MoeConfig",
        dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
             intermediate_size=256, moe_intermediate_size=64, num_experts=8, num_experts_per_tok=2,
             norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[], tie_word_embeddings=False,
             rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
        "qwen3", "qwen2", 4001, ["Q8_0", "Q4_K_M", "MXFP4_MOE"],
    ),
}
COMMON = dict(vocab_size=512, hidden_size=256, max_position_embeddings=128, hidden_act="silu",
              attention_bias=False, bos_token_id=None, eos_token_id=1, pad_token_id=0)


def reinit(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif name.endswith("mlp.gate.weight"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def unfuse_experts(folder, cfg):
    """Rewrites transformers 5's fused expert tensors as the Hub's one tensor per expert."""
    path = os.path.join(folder, "model.safetensors")
    sd = load_file(path)
    out = {}
    inter = cfg.moe_intermediate_size
    for name, t in sd.items():
        if name.endswith("mlp.experts.gate_up_proj"):
            base = name.removesuffix("gate_up_proj")
            for e in range(t.shape[0]):
                out[f"{base}{e}.gate_proj.weight"] = t[e, :inter].contiguous()
                out[f"{base}{e}.up_proj.weight"] = t[e, inter:].contiguous()
        elif name.endswith("mlp.experts.down_proj"):
            base = name.removesuffix("down_proj")
            for e in range(t.shape[0]):
                out[f"{base}{e}.down_proj.weight"] = t[e].contiguous()
        else:
            out[name] = t
    save_file(out, path, metadata={"format": "pt"})


def routing(model, ids):
    """Per MoE layer: router probabilities, chosen experts with their weights, top-k margins."""
    caught = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        gate = getattr(layer.mlp, "gate", None)
        if gate is None or not hasattr(gate, "top_k"):
            continue
        hooks.append(gate.register_forward_hook(lambda m, inp, o, i=i: caught.__setitem__(i, o)))
    with torch.no_grad():
        model(torch.tensor([ids]))
    for h in hooks:
        h.remove()
    layers = []
    for i in range(len(model.model.layers)):
        if i not in caught:
            layers.append(None)
            continue
        logits, scores, indices = caught[i]
        probs = torch.softmax(logits.double(), -1)
        k = indices.shape[-1]
        ranked = torch.sort(torch.softmax(logits.float(), -1), -1, descending=True).values
        margin = (ranked[:, k - 1] - ranked[:, k]) if ranked.shape[-1] > k else torch.ones(ranked.shape[0])
        layers.append({
            "router_probs": [blocks.r7(row) for row in probs.numpy()],
            "experts": indices.tolist(),
            "weights": [blocks.r7(row) for row in scores.double().numpy()],
            "margin": blocks.r7(margin.numpy()),
        })
    return layers


def ablated_bits(model, ids, layer, expert):
    """Surprisal with one expert of one layer ablated: its routing weight zeroed at every position
    (the others keep theirs, not renormalized), by a hook on transformers' router output."""
    gate = model.model.layers[layer].mlp.gate

    def hook(m, inp, out):
        logits, scores, indices = out
        return logits, scores.masked_fill(indices == expert, 0.0), indices

    h = gate.register_forward_hook(hook)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    h.remove()
    return [None] + [float(f"{-logp[i - 1, ids[i]] / np.log(2):.7g}") for i in range(1, len(ids))]


def reference(model, seqs):
    out = blocks.reference(model, seqs)
    for name, ids in seqs.items():
        out[name]["routing"] = routing(model, ids)
        # The expert layer 0 uses most on this text, ablated.
        counts = np.bincount(np.asarray(out[name]["routing"][0]["experts"]).ravel(), minlength=1)
        expert = int(counts.argmax())
        out[name]["ablate_expert"] = {"layer": 0, "expert": expert,
                                      "surprisal_bits": ablated_bits(model, ids, 0, expert)}
    return out


def dequant_checks(folder):
    """For every block type in the folder's GGUF files, the first tensor of that type: its first
    bytes (at least 64 values) and gguf-py's dequantized values, for the decoders' bit-for-bit test."""
    sys.path.insert(0, os.path.join(blocks.LLAMA_CPP_DIR, "gguf-py"))
    import gguf
    from gguf.quants import dequantize
    checks, seen = [], set()
    for f in sorted(os.listdir(folder)):
        if not f.endswith(".gguf"):
            continue
        for t in gguf.GGUFReader(os.path.join(folder, f)).tensors:
            ty = t.tensor_type
            if ty.name in seen or ty.name in ("F32", "F16", "BF16"):
                continue
            seen.add(ty.name)
            values, nbytes = gguf.GGML_QUANT_SIZES[ty]
            blocks_needed = max(1, -(-64 // values))
            raw = np.asarray(t.data).reshape(-1).view(np.uint8)[: blocks_needed * nbytes]
            vals = dequantize(raw, ty).astype(np.float32).reshape(-1)
            checks.append({"file": f, "tensor": t.name, "ggml_type": ty.name,
                           "first_bytes_hex": raw.tobytes().hex(),
                           "first64": [float(v) for v in vals[:64]]})
    with open(os.path.join(folder, "dequant_checks.json"), "w") as fh:
        json.dump({"what": "gguf-py dequantize on the first blocks of one tensor per type", "checks": checks}, fh, indent=1)


def make(arch, out_root, seed_offset):
    cls_name, kwargs, tok_from, pre_name, seed, quants = ARCHS[arch]
    seed += seed_offset
    out = os.path.join(out_root, arch)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    cfg = getattr(transformers, cls_name)(**COMMON, **kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    reinit(model, seed)
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    unfuse_experts(out, cfg)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(FIXTURES, tok_from, f), os.path.join(out, f))
    if os.path.exists(os.path.join(out, "generation_config.json")):
        os.remove(os.path.join(out, "generation_config.json"))
    load = lambda **kw: transformers.AutoModelForCausalLM.from_pretrained(  # noqa: E731
        out, attn_implementation="eager", dtype=torch.float32, **kw).eval()
    model = load()
    # transformers' GGUF config map for qwen3_moe has no expert_feed_forward_length (it would
    # build 768-wide experts): the GGUF's tensors are loaded into the folder's own config.
    folder_cfg = model.config
    seqs = blocks.sequences(seed)
    ref = reference(model, seqs)
    meta = {"arch": arch, "seed": seed, "transformers": transformers.__version__, "torch": torch.__version__}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"meta": meta, "sequences": ref}, f)
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, f"{arch}-F32.gguf")
        blocks.convert(out, f32, pre_name)
        shutil.copy(f32, os.path.join(out, os.path.basename(f32)))
        r32 = reference(load(gguf_file=os.path.basename(f32), config=folder_cfg), seqs)
        os.remove(os.path.join(out, os.path.basename(f32)))
        d = max(blocks.max_diff(r32[n]["logits"], ref[n]["logits"]) for n in seqs)
        assert d <= 1e-5, f"{arch}: the F32 GGUF gives logits {d} away from the HF folder's"
        summary["F32 vs HF logits"] = d
        for q in quants:
            dst = os.path.join(out, f"{arch}-{q}.gguf")
            blocks.subprocess.run([blocks.LLAMA_QUANTIZE, f32, dst, q, "2"], check=True,
                                  stdout=blocks.subprocess.DEVNULL, stderr=blocks.subprocess.DEVNULL)
            rq = reference(load(gguf_file=os.path.basename(dst), config=folder_cfg), seqs)
            summary[f"{q} vs HF logits"] = max(blocks.max_diff(rq[n]["logits"], ref[n]["logits"]) for n in seqs)
            with open(os.path.join(out, f"reference-{q}.json"), "w") as f:
                json.dump({"meta": dict(meta, gguf=os.path.basename(dst)), "sequences": rq}, f)
    dequant_checks(out)
    print(arch, json.dumps(summary))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=FIXTURES)
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--seed-offset", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(2)
    for arch in a.archs.split(","):
        make(arch, a.out, a.seed_offset)


if __name__ == "__main__":
    main()
