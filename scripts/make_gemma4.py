#!/usr/bin/env python3
"""Tiny random-weight Gemma 4 text checkpoints (Gemma4ForCausalLM) with transformers references.

`gemma4` carries every part of Gemma 4's dense text stack that differs from Gemma 3:
  - sliding layers with head_dim 32 and 2 KV heads, full layers with head_dim 64 (global_head_dim)
    and 1 KV head (num_global_key_value_heads), keys doubling as values there (attention_k_eq_v);
  - values RMS-normalized per head without a weight (v_norm), attention scaling 1.0;
  - proportional RoPE on the full layers (a quarter of the pairs rotate, over the whole head);
  - KV sharing: the last two layers reuse the keys and values of layers 0 and 1, and their MLPs are
    twice as wide (use_double_wide_mlp);
  - per-layer input embeddings (PLE: embed_tokens_per_layer, per_layer_model_projection, each
    layer's gate, projection and post norm) and each layer's layer_scalar;
  - plain (not zero-centred) RMSNorm weights, a final logit soft-cap.
`gemma4moe` is the 26B-A4B's shape: 2 layers [sliding, full] with keys as values on the full one,
and in both an 8-expert top-2 mixture (width 32) beside the dense MLP (width 64): the router on
the residual stream (weightless norm, `scale`, hidden^-0.5), `per_expert_scale`, the experts'
own pre/post norms; no per-layer inputs, no KV sharing.

It writes tests/fixtures/archs/<arch>/:
  config.json, model.safetensors, tokenizer.json, tokenizer_config.json   the HF folder (bfloat16)
  <arch>-Q8_0.gguf          llama.cpp's convert_hf_to_gguf.py --outtype q8_0 (its own Q8_0)
  <arch>-<TYPE>.gguf        the F32 GGUF through llama-quantize: Q4_K_M (gemma4), MXFP4_MOE (gemma4moe)
  reference.json            transformers (float32, eager attention) on the HF folder
  reference-<TYPE>.json     transformers on that GGUF's tensors, dequantized by gguf-py and loaded
                            under the HF names (transformers 5.25's GGUF loader does not know gemma4)
The F32 GGUF (converter --outtype f32) is checked here against the HF reference (logits within
1e-5) and not kept. Each sequence has make_block_shapes.py's fields and a greedy continuation of 6
tokens by transformers' generate (its cache, the shared keys and values included); the MoE file's
also `routing` (per layer: router probabilities, chosen experts, their weights after the
renormalization and the per-expert scale, top-k margins, from hooks on transformers' router) and
`ablate_expert` (layer 0's most used expert's routing weight zeroed at every position).

Pinned: Python 3.11, torch 2.15.0 (CPU), transformers 5.25.0, safetensors 0.8.0, numpy 2.4.6,
gguf-py, the converter and llama-quantize of llama.cpp commit 0c1e570 (llama-cpp-python 0.3.36 sdist).

  LLAMA_CPP_DIR=/path/to/llama.cpp LLAMA_QUANTIZE=/path/to/llama-quantize HF_HUB_OFFLINE=1 python scripts/make_gemma4.py \
      [--archs gemma4,gemma4moe] [--seed-offset N] [OUT_DIR]

Weights: matrices N(0, 0.1) (the router's N(0, 0.3): routing margins well above 1e-4), the tied embedding and the per-layer embedding N(0, 0.05), norm weights
1 + N(0, 0.1) except the q/k norms, 0.4 + N(0, 0.05) (unscaled scores of std about 1, not
sqrt(head_dim): rows that do not saturate), layer scalars uniform in [0.7, 1.3]. The tokenizer is the gemma3 fixture's.
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

FIXTURES = blocks.FIXTURES
MOE_CONFIG = dict(
    vocab_size=512, hidden_size=256, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=32, global_head_dim=64,
    num_global_key_value_heads=1, attention_k_eq_v=True,
    layer_types=["sliding_attention", "full_attention"],
    sliding_window=5, enable_moe_block=True, num_experts=8, top_k_experts=2, moe_intermediate_size=32,
    hidden_size_per_layer_input=0, final_logit_softcapping=30.0,
    max_position_embeddings=128, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
    tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=2,
)
CONFIG = dict(
    vocab_size=512, hidden_size=256, intermediate_size=128, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=2, head_dim=32, global_head_dim=64,
    num_global_key_value_heads=1, attention_k_eq_v=True,
    layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
    sliding_window=5, num_kv_shared_layers=2, use_double_wide_mlp=True,
    hidden_size_per_layer_input=32, vocab_size_per_layer_input=512, final_logit_softcapping=30.0,
    max_position_embeddings=128, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
    tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=2,
)
# name -> (config, seed)
# name -> (config, seed, llama-quantize types made from the F32 GGUF)
ARCHS = {"gemma4": (CONFIG, 7001, ["Q4_K_M"]), "gemma4moe": (MOE_CONFIG, 7002, ["MXFP4_MOE"])}


def routing(model, ids):
    """Per layer: transformers' router output (probabilities after the softmax, the chosen experts,
    their weights after the renormalization and the per-expert scale) and the top-k margins."""
    caught = {}
    hooks = [layer.router.register_forward_hook(lambda m, inp, o, i=i: caught.__setitem__(i, o))
             for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        model(torch.tensor([ids]))
    for h in hooks:
        h.remove()
    out = []
    for i in range(len(model.model.layers)):
        probs, weights, indices = caught[i]
        k = indices.shape[-1]
        ranked = torch.sort(probs.float(), -1, descending=True).values
        out.append({
            "router_probs": [blocks.r7(row) for row in probs.double().numpy()],
            "experts": indices.tolist(),
            "weights": [blocks.r7(row) for row in weights.double().numpy()],
            "margin": blocks.r7((ranked[:, k - 1] - ranked[:, k]).numpy()),
        })
    return out


def ablated_bits(model, ids, layer, expert):
    """Surprisal with one expert of one layer ablated: its routing weight zeroed at every position
    (the others keep theirs), by a hook on transformers' router output."""
    def hook(m, inp, out):
        probs, weights, indices = out
        return probs, weights.masked_fill(indices == expert, 0.0), indices

    h = model.model.layers[layer].router.register_forward_hook(hook)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    h.remove()
    return [None] + [float(f"{-logp[i - 1, ids[i]] / np.log(2):.7g}") for i in range(1, len(ids))]


def reinit(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("router.proj.weight"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(("q_norm.weight", "k_norm.weight")):
                # Scores are q.k unscaled (Gemma 4's attention scaling is 1.0) of unit-RMS heads:
                # q/k norm weights near 1 give scores of std sqrt(head_dim) and saturated rows
                # whose float32 noise floor (1.5e-5) reaches the attention tolerance.
                p.copy_(0.4 + 0.05 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for layer in model.model.layers:
            layer.layer_scalar.copy_(0.7 + 0.6 * torch.rand(1, generator=g))


def reference(model, seqs):
    out = {}
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
        out[name] = {
            "input_ids": ids,
            "logits": [blocks.r7(row) for row in logits.numpy()],
            "argmax": [int(x) for x in logits.argmax(-1)],
            "surprisal_bits": [None if b is None else float(f"{b:.7g}") for b in bits],
            "top5": [[[int(i), float(f"{p:.7g}")] for i, p in zip(ti, tp)] for ti, tp in zip(top.indices, top.values)],
            "last_hidden_state": [blocks.r7(row) for row in r.hidden_states[-1][0].numpy()],
            "attentions": [a[0].numpy().round(7).tolist() for a in r.attentions],
            "hidden_state_l2_norms": [blocks.r7(h[0].norm(dim=-1).numpy()) for h in r.hidden_states],
            "generate": [int(x) for x in gen[0, len(ids):]],
        }
        if model.config.enable_moe_block:
            out[name]["routing"] = routing(model, ids)
            counts = np.bincount(np.asarray(out[name]["routing"][0]["experts"]).ravel(), minlength=1)
            expert = int(counts.argmax())
            out[name]["ablate_expert"] = {"layer": 0, "expert": expert,
                                          "surprisal_bits": ablated_bits(model, ids, 0, expert)}
    return out


def gguf_state_dict(path, model):
    """The GGUF's tensors, dequantized by gguf-py, under the HF names."""
    sys.path.insert(0, os.path.join(blocks.LLAMA_CPP_DIR, "gguf-py"))
    import gguf
    from gguf.quants import dequantize
    cfg = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA4, cfg.num_hidden_layers)
    to_hf = {}
    for hf_name in model.state_dict():
        if hf_name == "lm_head.weight":
            continue
        layer = hf_name.split(".")[2] if hf_name.startswith("model.layers.") else None
        # The converter's own names for the router's vectors and the expert stacks.
        moe = {"router.scale": "ffn_gate_inp.scale", "router.per_expert_scale": "ffn_down_exps.scale",
               "experts.gate_up_proj": "ffn_gate_up_exps.weight", "experts.down_proj": "ffn_down_exps.weight"}
        tail = hf_name.split(".", 3)[-1] if layer is not None else None
        if tail in moe:
            to_hf[f"blk.{layer}.{moe[tail]}"] = hf_name
            continue
        probe = hf_name + ".weight" if hf_name.endswith("layer_scalar") else hf_name
        gg = names.get_name(probe, try_suffixes=(".weight", ".bias"))
        assert gg is not None, hf_name
        to_hf[gg] = hf_name
    sd = {}
    for t in gguf.GGUFReader(path).tensors:
        if t.name == "rope_freqs.weight":
            continue  # the proportional RoPE's factors (1 rotated, 1e30 not): transformers computes them
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(x) for x in reversed(t.shape)])
        hf = to_hf.get(t.name) or to_hf.get(t.name.removesuffix(".weight"))
        assert hf is not None, t.name
        sd[hf] = torch.from_numpy(np.ascontiguousarray(w)).reshape(model.state_dict()[hf].shape)
    missing = set(model.state_dict()) - set(sd) - {"lm_head.weight"}
    assert not missing, f"{path}: no GGUF tensor for {sorted(missing)}"
    return sd


def convert(hf_dir, out_file, outtype):
    code = f"""
import sys, importlib.util
sys.path.insert(0, {blocks.LLAMA_CPP_DIR!r})
spec = importlib.util.spec_from_file_location('convert_hf_to_gguf', {os.path.join(blocks.LLAMA_CPP_DIR, 'convert_hf_to_gguf.py')!r})
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
sys.argv = ['convert_hf_to_gguf.py', {hf_dir!r}, '--outtype', {outtype!r}, '--outfile', {out_file!r}]
mod.main()
"""
    blocks.subprocess.run([sys.executable, "-c", code], check=True, stdout=blocks.subprocess.DEVNULL)


def make(arch, out_root, seed_offset):
    config, seed, quants = ARCHS[arch]
    seed += seed_offset
    out = os.path.join(out_root, arch)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    cfg = transformers.Gemma4TextConfig(**config)
    torch.manual_seed(seed)
    model = transformers.Gemma4ForCausalLM(cfg).float().eval()
    reinit(model, seed)
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        shutil.copy(os.path.join(FIXTURES, "gemma3", f), os.path.join(out, f))
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
        convert(out, f32, "f32")
        check = load()
        check.load_state_dict(gguf_state_dict(f32, check), strict=False)
        r32 = reference(check, seqs)
        d = max(blocks.max_diff(r32[n]["logits"], ref[n]["logits"]) for n in seqs)
        assert d <= 1e-5, f"the F32 GGUF's weights give logits {d} away from the HF folder's"
        summary["F32 vs HF logits"] = d
        for q in quants:
            dst = os.path.join(out, f"{arch}-{q}.gguf")
            blocks.subprocess.run([blocks.LLAMA_QUANTIZE, f32, dst, q, "2"], check=True,
                                  stdout=blocks.subprocess.DEVNULL, stderr=blocks.subprocess.DEVNULL)
            qm = load()
            qm.load_state_dict(gguf_state_dict(dst, qm), strict=False)
            rq = reference(qm, seqs)
            summary[f"{q} vs HF logits"] = max(blocks.max_diff(rq[n]["logits"], ref[n]["logits"]) for n in seqs)
            with open(os.path.join(out, f"reference-{q}.json"), "w") as f:
                json.dump({"meta": dict(meta, gguf=os.path.basename(dst)), "sequences": rq}, f)
    dst = os.path.join(out, f"{arch}-Q8_0.gguf")
    convert(out, dst, "q8_0")
    qm = load()
    qm.load_state_dict(gguf_state_dict(dst, qm), strict=False)
    rq = reference(qm, seqs)
    summary["Q8_0 vs HF logits"] = max(blocks.max_diff(rq[n]["logits"], ref[n]["logits"]) for n in seqs)
    with open(os.path.join(out, "reference-Q8_0.json"), "w") as f:
        json.dump({"meta": dict(meta, gguf=os.path.basename(dst)), "sequences": rq}, f)
    print(arch, json.dumps(summary))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=FIXTURES)
    ap.add_argument("--seed-offset", type=int, default=0)
    ap.add_argument("--archs", default=",".join(ARCHS))
    a = ap.parse_args()
    torch.set_num_threads(2)
    for arch in a.archs.split(","):
        make(arch, a.out, a.seed_offset)


if __name__ == "__main__":
    main()
