#!/usr/bin/env python3
"""A tiny random-weight gpt-oss checkpoint (GptOssForCausalLM: attention sinks, alternating
sliding-window and full layers, YaRN RoPE, biases everywhere, experts with clamped SwiGLU) with
transformers references, router probabilities and chosen experts included.

Writes tests/fixtures/archs/gptoss/:
  config.json, model.safetensors, tokenizer.json, tokenizer_config.json   the HF folder, in
                            transformers 5's layout (gate_up_proj `[experts, hidden, 2 * width]`
                            with gate and up interleaved, down_proj `[experts, width, hidden]`)
  gptoss-<TYPE>.gguf        llama.cpp's convert_hf_to_gguf.py (F32), then llama-quantize TYPE
  reference.json            transformers (float32, eager attention) on the HF folder
  mxfp4/                    the HF folder as the Hub ships gpt-oss: experts as MXFP4
                            `*_blocks`/`*_scales` (the MXFP4_MOE file's blocks, llama.cpp's repacking
                            undone), `quantization_config` mxfp4, and its reference.json from
                            transformers' own MXFP4 loader (which dequantizes on a CPU)
  reference-<TYPE>.json     transformers on that GGUF's tensors: transformers 5.25's GGUF loader
                            fails on gpt-oss files (it reads each rope.scaling value from the
                            field's first part, the key's length), so the file is read with gguf-py
                            (its dequantize), the converter's renames and transforms undone (gate
                            and up interleaved again, down transposed back), and the weights loaded
                            into the folder's transformers model
Each sequence's reference holds make_block_shapes.py's fields and make_experts.py's routing
(`routing`, `ablate_expert`), and a greedy continuation (`generate`).

Pinned: Python 3.11, torch 2.15.0 (CPU), transformers 5.25.0, safetensors 0.8.0, numpy 2.4.6,
gguf 0.19; llama.cpp commit 0c1e570 (the llama-cpp-python 0.3.36 sdist) for the converter and
llama-quantize.

  LLAMA_CPP_DIR=/path/to/llama.cpp LLAMA_QUANTIZE=/path/to/llama-quantize \
      HF_HUB_OFFLINE=1 python scripts/make_gptoss.py [--seed-offset N] [OUT_DIR]

Weights: matrices N(0, 0.1), the embedding N(0, 0.05), norms 1 + N(0, 0.1), biases N(0, 0.1),
sinks N(0, 1), the router N(0, 0.3); the expert gate_up N(0, 0.3) so that the clamp at
swiglu_limit (here 1.5; a GGUF file has no such key and means 7.0, llama.cpp's constant, so its
references use 7.0) is reached. The tokenizer is the qwen3 fixture's.
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
CONFIG = dict(vocab_size=512, hidden_size=256, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=64, num_local_experts=8,
              num_experts_per_tok=2, sliding_window=4, max_position_embeddings=256,
              tie_word_embeddings=False, rms_norm_eps=1e-5, swiglu_limit=1.5,
              rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 4.0,
                               "beta_fast": 32.0, "beta_slow": 1.0,
                               "original_max_position_embeddings": 64, "truncate": False},
              bos_token_id=None, eos_token_id=1, pad_token_id=0)
SEED = 7001
# What a GGUF file of this model means where it carries no key (see main).
GGUF_MEANS = dict(swiglu_limit=7.0, rope_parameters=dict(CONFIG["rope_parameters"], truncate=True))
QUANTS = ["Q8_0", "MXFP4_MOE"]


def reinit(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("sinks"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif "norm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif name.endswith("router.weight") or name.endswith("gate_up_proj"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def routing(model, ids):
    """make_experts.routing with gpt-oss's router under `mlp.router`."""
    for layer in model.model.layers:
        layer.mlp.gate = layer.mlp.router
    try:
        return experts.routing(model, ids)
    finally:
        for layer in model.model.layers:
            del layer.mlp.gate


def reference(model, seqs):
    out = blocks.reference(model, seqs)
    for name, ids in seqs.items():
        out[name]["routing"] = routing(model, ids)
        counts = np.bincount(np.asarray(out[name]["routing"][0]["experts"]).ravel(), minlength=1)
        expert = int(counts.argmax())
        for layer in model.model.layers:
            layer.mlp.gate = layer.mlp.router
        out[name]["ablate_expert"] = {"layer": 0, "expert": expert,
                                      "surprisal_bits": experts.ablated_bits(model, ids, 0, expert)}
        for layer in model.model.layers:
            del layer.mlp.gate
        with torch.no_grad():
            gen = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
        out[name]["generate"] = [int(x) for x in gen[0, len(ids):]]
    return out


def gguf_state_dict(path, model):
    """The GGUF's tensors, dequantized by gguf-py, under transformers' names and layouts."""
    sys.path.insert(0, os.path.join(blocks.LLAMA_CPP_DIR, "gguf-py"))
    import gguf
    from gguf.quants import dequantize
    cfg = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT_OSS, cfg.num_hidden_layers)
    to_hf = {}
    for hf_name in model.state_dict():
        if ".mlp.experts." in hf_name:
            continue
        probe = hf_name + ".weight" if hf_name.endswith("sinks") else hf_name
        gg = names.get_name(probe, try_suffixes=(".weight", ".bias"))
        assert gg is not None, hf_name
        to_hf[gg] = hf_name
    sd, stacks = {}, {}
    for t in gguf.GGUFReader(path).tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(x) for x in reversed(t.shape)])
        if "_exps." in t.name:
            stacks[t.name] = w
            continue
        key = t.name.removesuffix(".weight") if t.name.endswith("attn_sinks.weight") else t.name
        hf = to_hf.get(key) or to_hf[t.name]
        sd[hf] = torch.from_numpy(np.ascontiguousarray(w))
    for i in range(cfg.num_hidden_layers):
        b = f"blk.{i}."
        p = f"model.layers.{i}.mlp.experts."
        gate, up = stacks.pop(b + "ffn_gate_exps.weight"), stacks.pop(b + "ffn_up_exps.weight")
        gu = np.empty((gate.shape[0], gate.shape[2], 2 * gate.shape[1]), dtype=np.float32)
        gu[:, :, 0::2] = gate.transpose(0, 2, 1)
        gu[:, :, 1::2] = up.transpose(0, 2, 1)
        sd[p + "gate_up_proj"] = torch.from_numpy(gu)
        gb, ub = stacks.pop(b + "ffn_gate_exps.bias"), stacks.pop(b + "ffn_up_exps.bias")
        gub = np.empty((gb.shape[0], 2 * gb.shape[1]), dtype=np.float32)
        gub[:, 0::2], gub[:, 1::2] = gb, ub
        sd[p + "gate_up_proj_bias"] = torch.from_numpy(gub)
        sd[p + "down_proj"] = torch.from_numpy(np.ascontiguousarray(stacks.pop(b + "ffn_down_exps.weight").transpose(0, 2, 1)))
        sd[p + "down_proj_bias"] = torch.from_numpy(stacks.pop(b + "ffn_down_exps.bias"))
    assert not stacks, sorted(stacks)
    missing = set(model.state_dict()) - set(sd)
    assert not missing, f"{path}: no GGUF tensor for {sorted(missing)}"
    return sd


def mxfp4_folder(out, seqs):
    """The folder with its experts as the Hub's MXFP4 blocks and scales, from the MXFP4_MOE file."""
    sys.path.insert(0, os.path.join(blocks.LLAMA_CPP_DIR, "gguf-py"))
    import gguf
    from safetensors.torch import load_file, save_file
    dst = os.path.join(out, "mxfp4")
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(out, f), dst)
    sd = load_file(os.path.join(out, "model.safetensors"))
    raw = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(os.path.join(out, "gptoss-MXFP4_MOE.gguf")).tensors
           if "_exps.weight" in t.name}

    def to_hf(b):
        # ggml: [scale, 16 bytes], byte j = values j (low nibble) and j + 16; the Hub: byte b =
        # values 2b (low) and 2b + 1, scales apart.
        e, rows, nbytes = b.shape
        b = b.reshape(e, rows, nbytes // 17, 17)
        qs = b[..., 1:]
        vals = np.concatenate([qs & 0xF, qs >> 4], axis=-1)
        return (vals[..., 0::2] | (vals[..., 1::2] << 4)).astype(np.uint8), b[..., 0].copy()

    for i in range(CONFIG["num_hidden_layers"]):
        p = f"model.layers.{i}.mlp.experts."
        (g, gs), (u, us) = to_hf(raw[f"blk.{i}.ffn_gate_exps.weight"]), to_hf(raw[f"blk.{i}.ffn_up_exps.weight"])
        gu = np.empty((g.shape[0], 2 * g.shape[1]) + g.shape[2:], np.uint8)
        gu[:, 0::2], gu[:, 1::2] = g, u
        gus = np.empty((gs.shape[0], 2 * gs.shape[1], gs.shape[2]), np.uint8)
        gus[:, 0::2], gus[:, 1::2] = gs, us
        d, ds = to_hf(raw[f"blk.{i}.ffn_down_exps.weight"])
        del sd[p + "gate_up_proj"], sd[p + "down_proj"]
        sd.update({p + "gate_up_proj_blocks": torch.from_numpy(gu), p + "gate_up_proj_scales": torch.from_numpy(gus),
                   p + "down_proj_blocks": torch.from_numpy(d), p + "down_proj_scales": torch.from_numpy(ds)})
    save_file(sd, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(dst, "config.json")) as f:
        cfg = json.load(f)
    cfg["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        dst, attn_implementation="eager", dtype=torch.float32).eval()
    with open(os.path.join(dst, "reference.json"), "w") as f:
        json.dump({"meta": {"transformers": transformers.__version__, "quantization": "mxfp4 (dequantized by transformers)"},
                   "sequences": reference(model, seqs)}, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=FIXTURES)
    ap.add_argument("--seed-offset", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(2)
    seed = SEED + a.seed_offset
    out = os.path.join(a.out, "gptoss")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    cfg = transformers.GptOssConfig(**CONFIG)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    reinit(model, seed)
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(FIXTURES, "qwen3", f), os.path.join(out, f))
    if os.path.exists(os.path.join(out, "generation_config.json")):
        os.remove(os.path.join(out, "generation_config.json"))
    load = lambda **kw: transformers.AutoModelForCausalLM.from_pretrained(  # noqa: E731
        out, attn_implementation="eager", dtype=torch.float32, **kw).eval()
    model = load()
    seqs = blocks.sequences(seed)
    ref = reference(model, seqs)
    meta = {"arch": "gptoss", "seed": seed, "transformers": transformers.__version__, "torch": torch.__version__}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"meta": meta, "sequences": ref}, f)
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, "gptoss-F32.gguf")
        blocks.convert(out, f32, "gpt-2")
        # A GGUF file has no swiglu_limit: llama.cpp's gpt-oss graph always clamps at 7.0 (and
        # alpha 1.702); nor YaRN's `truncate`, which transformers' YaRN then takes as true (as
        # llama.cpp's correction dims are): that is what the file computes.
        check = load(**GGUF_MEANS)
        check.load_state_dict(gguf_state_dict(f32, check), strict=True)
        r32 = reference(check, seqs)
        d = max(blocks.max_diff(r32[n]["logits"], ref[n]["logits"]) for n in seqs)
        summary["F32 (limit 7, truncated YaRN) vs HF (limit 1.5) logits"] = d
        # The F32 file against the folder with the file's limit: the layouts are undone exactly.
        same = reference(load(**GGUF_MEANS), seqs)
        d = max(blocks.max_diff(r32[n]["logits"], same[n]["logits"]) for n in seqs)
        assert d <= 1e-5, f"the F32 GGUF gives logits {d} away from the HF folder's"
        for q in QUANTS:
            dst = os.path.join(out, f"gptoss-{q}.gguf")
            blocks.subprocess.run([blocks.LLAMA_QUANTIZE, f32, dst, q, "2"], check=True,
                                  stdout=blocks.subprocess.DEVNULL, stderr=blocks.subprocess.DEVNULL)
            qm = load(**GGUF_MEANS)
            qm.load_state_dict(gguf_state_dict(dst, qm), strict=True)
            rq = reference(qm, seqs)
            summary[f"{q} vs HF logits"] = max(blocks.max_diff(rq[n]["logits"], ref[n]["logits"]) for n in seqs)
            with open(os.path.join(out, f"reference-{q}.json"), "w") as f:
                json.dump({"meta": dict(meta, gguf=os.path.basename(dst)), "sequences": rq}, f)
    mxfp4_folder(out, seqs)
    print("gptoss", json.dumps(summary))


if __name__ == "__main__":
    main()
