#!/usr/bin/env python3
"""Tiny random-weight hybrid checkpoints (Qwen3.5 and Qwen3.5-MoE: Gated DeltaNet linear-attention
layers between gated full-attention layers; the MoE variant with a shared expert) with
transformers references.

For each architecture it writes tests/fixtures/archs/<arch>/:
  config.json, model.safetensors, tokenizer.json, tokenizer_config.json   the HF folder
  <arch>-<TYPE>.gguf        llama.cpp's convert_hf_to_gguf.py (F32), then llama-quantize TYPE
  reference.json            transformers (float32, eager attention) on the HF folder
  reference-<TYPE>.json     transformers on that GGUF's tensors: transformers 5.25's GGUF loader does
                            not know qwen35, so the file is read with gguf-py (its dequantize), the
                            converter's renames and transforms are undone (A_log = log(-ssm_a), norms
                            minus one, value heads back from llama.cpp's tiled order to the grouped
                            order, expert stacks fused as transformers 5 holds them) and the weights are loaded into the folder's transformers model
Each sequence's reference holds make_block_shapes.py's fields (logits, surprisal, top-5, hidden-state
norms) with `attentions` only for the full-attention layers (`attention_layers` says which), plus
  mixing          per linear-attention layer (by index) and value head, the gated delta rule unrolled:
                  o_t = sum_s M[t][s] v_s, from transformers' own torch_chunk_gated_delta_rule run on
                  one-hot value vectors (the rule is linear in v given q, k, g and beta)
  generate        greedy continuation of 6 tokens by transformers' generate (its recurrent cache)
  routing, ablate_expert   for the MoE variant, as make_experts.py writes them (router
                  probabilities, chosen experts, weights, top-k margins; layer 0's most used
                  expert ablated)
The F32 GGUF is checked here against the HF reference (logits within 1e-5) and not kept.

Pinned: Python 3.11, torch 2.15.0 (CPU), transformers 5.25.0, safetensors 0.8.0, numpy 2.4.6,
gguf 0.19; llama.cpp commit 0c1e570 (the copy in the llama-cpp-python 0.3.36 sdist) for the
converter and llama-quantize.

  LLAMA_CPP_DIR=/path/to/llama.cpp LLAMA_QUANTIZE=/path/to/llama-quantize \
      HF_HUB_OFFLINE=1 python scripts/make_hybrid.py [--seed-offset N] [OUT_DIR]

Weights: matrices N(0, 0.1), the untied embedding N(0, 0.05), the zero-centred RMSNorm weights
(stored w, applied 1 + w) N(0, 0.1), the gated norm of the linear layers 1 + N(0, 0.1), the conv
kernel N(0, 0.5), A = exp(A_log) uniform in [0.05, 1], dt_bias N(-1, 0.5): decays near 0.85, so
the state remembers several tokens. The tokenizer is the qwen3 fixture's.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_block_shapes as blocks  # noqa: E402
import make_experts as experts  # noqa: E402

FIXTURES = blocks.FIXTURES

# name -> (config class, config kwargs, tokenizer fixture, llama.cpp pre-tokenizer, seed, quants)
ARCHS = {
    "qwen35": (
        "Qwen3_5TextConfig",
        dict(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
             intermediate_size=256, linear_conv_kernel_dim=4, linear_key_head_dim=64,
             linear_value_head_dim=64, linear_num_key_heads=2, linear_num_value_heads=4,
             tie_word_embeddings=False, rms_norm_eps=1e-6,
             rope_parameters={"rope_type": "default", "rope_theta": 10000000.0,
                              "partial_rotary_factor": 0.25, "mrope_section": [4, 2, 2],
                              "mrope_interleaved": True}),
        "qwen3", "qwen2", 5001, ["Q8_0", "Q4_K_M"],
    ),
    "qwen35moe": (
        "Qwen3_5MoeTextConfig",
        dict(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
             linear_conv_kernel_dim=4, linear_key_head_dim=64, linear_value_head_dim=64,
             linear_num_key_heads=2, linear_num_value_heads=4, moe_intermediate_size=64,
             shared_expert_intermediate_size=128, num_experts=8, num_experts_per_tok=2,
             tie_word_embeddings=False, rms_norm_eps=1e-6,
             rope_parameters={"rope_type": "default", "rope_theta": 10000000.0,
                              "partial_rotary_factor": 0.25, "mrope_section": [4, 2, 2],
                              "mrope_interleaved": True}),
        "qwen3", "qwen2", 6001, ["Q8_0", "Q4_K_M", "MXFP4_MOE"],
    ),
}
COMMON = dict(vocab_size=512, hidden_size=256, max_position_embeddings=128, hidden_act="silu",
              attention_bias=False, bos_token_id=None, eos_token_id=1, pad_token_id=0)


def reinit(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log"):
                p.copy_(torch.log(0.05 + 0.95 * torch.rand(p.shape, generator=g)))
            elif name.endswith("dt_bias"):
                p.copy_(-1 + 0.5 * torch.randn(p.shape, generator=g))
            elif name.endswith("linear_attn.norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "conv1d" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif name.endswith("mlp.gate.weight"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def mixing(model, ids):
    """Per linear-attention layer and value head: the T x T matrix M with o_t = sum_s M[t][s] v_s,
    from transformers' chunked gated delta rule given one-hot values (it is linear in v)."""
    caught = []
    q35 = sys.modules[type(model).__module__]
    orig = q35.torch_chunk_gated_delta_rule

    def spy(query, key, value, g, beta, **kw):
        out = orig(query, key, value, g=g, beta=beta, **kw)
        t, h = value.shape[1], value.shape[2]
        eye = torch.eye(t, dtype=value.dtype).reshape(1, t, 1, t).expand(1, t, h, t).contiguous()
        kw2 = dict(kw, initial_state=None, output_final_state=False)
        m, _ = orig(query, key, eye, g=g, beta=beta, **kw2)
        caught.append(m[0].permute(1, 0, 2).double())  # [head, t, s]
        return out

    q35.torch_chunk_gated_delta_rule = spy
    try:
        with torch.no_grad():
            model(torch.tensor([ids]))
    finally:
        q35.torch_chunk_gated_delta_rule = orig
    layers = [i for i, t in enumerate(model.config.layer_types) if t == "linear_attention"]
    assert len(layers) == len(caught)
    return {str(i): [[blocks.r7(row) for row in head.numpy()] for head in m] for i, m in zip(layers, caught)}


def reference(model, seqs):
    out = {}
    types = model.config.layer_types
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    for name, ids in seqs.items():
        with torch.no_grad():
            r = model(torch.tensor([ids]), output_hidden_states=True, output_attentions=True)
            gen = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
        logits = r.logits[0].double()
        logp = torch.log_softmax(logits, -1)
        probs = logp.exp()
        bits = [None] + [float(-logp[i - 1, ids[i]] / np.log(2)) for i in range(1, len(ids))]
        top = torch.topk(probs, 5, dim=-1)
        assert len(r.attentions) == len(full)
        out[name] = {
            "input_ids": ids,
            "logits": [blocks.r7(row) for row in logits.numpy()],
            "argmax": [int(x) for x in logits.argmax(-1)],
            "surprisal_bits": [None if b is None else float(f"{b:.7g}") for b in bits],
            "top5": [[[int(i), float(f"{p:.7g}")] for i, p in zip(ti, tp)] for ti, tp in zip(top.indices, top.values)],
            "last_hidden_state": [blocks.r7(row) for row in r.hidden_states[-1][0].numpy()],
            "attention_layers": full,
            "attentions": [a[0].numpy().round(7).tolist() for a in r.attentions],
            "hidden_state_l2_norms": [blocks.r7(h[0].norm(dim=-1).numpy()) for h in r.hidden_states],
            "mixing": mixing(model, ids),
            "generate": [int(x) for x in gen[0, len(ids):]],
        }
        if getattr(model.config, "num_experts", 0):
            out[name]["routing"] = experts.routing(model, ids)
            counts = np.bincount(np.asarray(out[name]["routing"][0]["experts"]).ravel(), minlength=1)
            expert = int(counts.argmax())
            out[name]["ablate_expert"] = {"layer": 0, "expert": expert,
                                          "surprisal_bits": experts.ablated_bits(model, ids, 0, expert)}
    return out


def untile(w, dim, nk, nvpk, head):
    """llama.cpp's tiled value-head order back to transformers' grouped order along `dim`."""
    shape = list(w.shape)
    new = shape[:dim] + [nvpk, nk, head] + shape[dim + 1:]
    w = w.reshape(new)
    perm = list(range(len(new)))
    perm[dim], perm[dim + 1] = perm[dim + 1], perm[dim]
    return np.ascontiguousarray(w.transpose(perm)).reshape(shape)


def gguf_state_dict(path, model):
    """The GGUF's tensors, dequantized by gguf-py, under the HF names, the converter's transforms undone."""
    sys.path.insert(0, os.path.join(blocks.LLAMA_CPP_DIR, "gguf-py"))
    import gguf
    from gguf.quants import dequantize
    cfg = model.config
    nk, nv = cfg.linear_num_key_heads, cfg.linear_num_value_heads
    nvpk, dk, dv = nv // nk, cfg.linear_key_head_dim, cfg.linear_value_head_dim
    arch_id = gguf.MODEL_ARCH.QWEN35MOE if getattr(cfg, "num_experts", 0) else gguf.MODEL_ARCH.QWEN35
    names = gguf.get_tensor_name_map(arch_id, cfg.num_hidden_layers)
    to_hf = {}
    for hf_name in model.state_dict():
        if ".mlp.experts." in hf_name:
            continue
        probe = hf_name.replace(".dt_bias", ".dt_proj.bias")
        gg = names.get_name(probe, try_suffixes=(".weight", ".bias"))
        assert gg is not None, hf_name
        to_hf[gg] = hf_name
    sd = {}
    stacks = {}
    for t in gguf.GGUFReader(path).tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(x) for x in reversed(t.shape)])
        if "_exps." in t.name:
            # The experts' 3-D stacks: transformers 5 holds gate and up fused, then down.
            stacks[t.name] = w
            continue
        hf = to_hf[t.name]
        if hf.endswith("shared_expert_gate.weight"):
            w = w.reshape(1, -1)
        if hf.endswith("A_log"):
            w = np.log(-w)
        elif hf.endswith("norm.weight") and not hf.endswith("linear_attn.norm.weight"):
            w = w - 1
        if "linear_attn." in hf and nk != nv:
            if hf.endswith("in_proj_qkv.weight"):
                w = np.concatenate([w[: 2 * nk * dk], untile(w[2 * nk * dk:], 0, nk, nvpk, dv)])
            elif hf.endswith("conv1d.weight"):
                w = np.concatenate([w[: 2 * nk * dk], untile(w[2 * nk * dk:], 0, nk, nvpk, dv)])
            elif hf.endswith("in_proj_z.weight"):
                w = untile(w, 0, nk, nvpk, dv)
            elif hf.endswith(("in_proj_a.weight", "in_proj_b.weight")):
                w = untile(w, 0, nk, nvpk, 1)
            elif hf.endswith(("A_log", "dt_bias")):
                w = untile(w[:, None], 0, nk, nvpk, 1)[:, 0]
            elif hf.endswith("out_proj.weight"):
                w = untile(w, 1, nk, nvpk, dv)
        if hf.endswith("conv1d.weight"):
            w = w[:, None, :]
        sd[hf] = torch.from_numpy(np.ascontiguousarray(w))
    for i in range(cfg.num_hidden_layers):
        gate = stacks.pop(f"blk.{i}.ffn_gate_exps.weight", None)
        if gate is None:
            continue
        up = stacks.pop(f"blk.{i}.ffn_up_exps.weight")
        down = stacks.pop(f"blk.{i}.ffn_down_exps.weight")
        sd[f"model.layers.{i}.mlp.experts.gate_up_proj"] = torch.from_numpy(np.concatenate([gate, up], axis=1))
        sd[f"model.layers.{i}.mlp.experts.down_proj"] = torch.from_numpy(np.ascontiguousarray(down))
    assert not stacks, sorted(stacks)
    missing = set(model.state_dict()) - set(sd)
    assert not missing, f"{path}: no GGUF tensor for {sorted(missing)}"
    return sd


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
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(FIXTURES, tok_from, f), os.path.join(out, f))
    if os.path.exists(os.path.join(out, "generation_config.json")):
        os.remove(os.path.join(out, "generation_config.json"))
    load = lambda: transformers.AutoModelForCausalLM.from_pretrained(  # noqa: E731
        out, attn_implementation="eager", dtype=torch.float32).eval()
    model = load()
    seqs = blocks.sequences(seed)
    ref = reference(model, seqs)
    meta = {"arch": arch, "seed": seed, "transformers": transformers.__version__, "torch": torch.__version__}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"meta": meta, "sequences": ref}, f)
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, f"{arch}-F32.gguf")
        blocks.convert(out, f32, pre_name, ["--no-mtp"])
        check = load()
        check.load_state_dict(gguf_state_dict(f32, check), strict=True)
        r32 = reference(check, seqs)
        d = max(blocks.max_diff(r32[n]["logits"], ref[n]["logits"]) for n in seqs)
        assert d <= 1e-5, f"{arch}: the F32 GGUF's weights give logits {d} away from the HF folder's"
        summary["F32 vs HF logits"] = d
        for q in quants:
            dst = os.path.join(out, f"{arch}-{q}.gguf")
            blocks.subprocess.run([blocks.LLAMA_QUANTIZE, f32, dst, q, "2"], check=True,
                                  stdout=blocks.subprocess.DEVNULL, stderr=blocks.subprocess.DEVNULL)
            qm = load()
            qm.load_state_dict(gguf_state_dict(dst, qm), strict=True)
            rq = reference(qm, seqs)
            summary[f"{q} vs HF logits"] = max(blocks.max_diff(rq[n]["logits"], ref[n]["logits"]) for n in seqs)
            with open(os.path.join(out, f"reference-{q}.json"), "w") as f:
                json.dump({"meta": dict(meta, gguf=os.path.basename(dst)), "sequences": rq}, f)
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
