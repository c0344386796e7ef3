#!/usr/bin/env python3
"""Tiny random-weight OLMo 2 and SmolLM3 checkpoints with transformers references, for the block
shapes that are data (norms after the sub-layers, q/k norms over the whole projection, layers
without RoPE).

For each architecture it writes tests/fixtures/archs/<arch>/:
  config.json, model.safetensors, tokenizer.json, tokenizer_config.json   the HF folder
  <arch>-<TYPE>.gguf        llama.cpp's convert_hf_to_gguf.py (F32), then llama-quantize TYPE
  reference.json            transformers (float32, eager attention) on the HF folder
  reference-<TYPE>.json     transformers on the same model with every weight replaced by the GGUF's
                            dequantized tensor (gguf-py's dequantizer, the converter's renaming and
                            q/k permutation undone); transformers' own GGUF loader does not know
                            these two architectures
The F32 GGUF is checked here against the HF reference (logits within 1e-5) and not kept.

Pinned: Python 3.11, torch 2.15.0 (CPU), transformers 5.25.0, safetensors 0.8.0, numpy 2.4.6,
tokenizers 0.23.3; llama.cpp commit 0c1e570 (the copy in the llama-cpp-python 0.3.36 sdist,
vendor/llama.cpp) for the converter, its gguf-py and llama-quantize.

  LLAMA_CPP_DIR=/path/to/llama.cpp LLAMA_QUANTIZE=/path/to/llama-quantize \
      HF_HUB_OFFLINE=1 python scripts/make_block_shapes.py [--seed-offset N] [OUT_DIR]

Conventions are those of tests/fixtures/archs/README.md: vocab 512, hidden 256, norm weights
1 + N(0, 0.1), matrices N(0, 0.1) (SmolLM3's 4 layers: 0.07), a tied embedding N(0, 0.1), an untied one N(0, 0.05); the
tokenizers are the existing fixtures' (qwen3's byte-level BPE for OLMo 2, llama3's for SmolLM3).
--seed-offset makes a different set with the same commands (a hidden set).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "archs")
LLAMA_CPP_DIR = os.environ.get("LLAMA_CPP_DIR", "/var/cache/llama.cpp")
LLAMA_QUANTIZE = os.environ.get("LLAMA_QUANTIZE", os.path.join(LLAMA_CPP_DIR, "build/bin/llama-quantize"))

# name -> (config class, config kwargs, tokenizer fixture, llama.cpp pre-tokenizer, seed, quants,
#          matrix std, the HF folder's stored dtype)
ARCHS = {
    "olmo2": (
        "Olmo2Config",
        dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
             rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
        "qwen3", "qwen2", 3001, ["Q8_0", "Q4_K_M"], 0.1, torch.float32,
    ),
    "smollm3": (
        "SmolLM3Config",
        # 4 layers: layer 3 is the NoPE one (every fourth, as llama.cpp fixes it for GGUF).
        dict(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
             rope_parameters={"rope_type": "default", "rope_theta": 2000000.0}),
        # Matrices N(0, 0.07): with 0.1 over 4 layers the attention saturates and transformers'
        # own float32 drifts 6e-5 from float64 in the last block's output.
        # Stored as bfloat16 (3.4 MB, not 6.8): the reference runs in float32 on those same values.
        "llama3", "llama-bpe", 3002, ["Q8_0", "Q4_K_M"], 0.07, torch.bfloat16,
    ),
}
COMMON = dict(vocab_size=512, hidden_size=256, intermediate_size=256, max_position_embeddings=128,
              hidden_act="silu", attention_bias=False, bos_token_id=None, eos_token_id=1, pad_token_id=0)


def reinit(model, seed, tied, matrix_std):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_((0.1 if tied else 0.05) * torch.randn(p.shape, generator=g))
            else:
                p.copy_(matrix_std * torch.randn(p.shape, generator=g))


def sequences(seed):
    rng = np.random.default_rng(seed)
    return {f"seq{n}": [int(x) for x in rng.integers(3, 512, size=n)] for n in (7, 33)}


def r7(a):
    return [float(f"{x:.7g}") for x in np.asarray(a, dtype=np.float64).ravel()]


def reference(model, seqs):
    out = {}
    layers = model.model.layers
    for name, ids in seqs.items():
        captured = {}
        hook = layers[-1].register_forward_hook(lambda m, i, o: captured.__setitem__("last", o[0] if isinstance(o, tuple) else o))
        with torch.no_grad():
            r = model(torch.tensor([ids]), output_hidden_states=True, output_attentions=True)
        hook.remove()
        logits = r.logits[0].double()
        logp = torch.log_softmax(logits, -1)
        probs = logp.exp()
        bits = [None] + [float(-logp[i - 1, ids[i]] / np.log(2)) for i in range(1, len(ids))]
        top = torch.topk(probs, 5, dim=-1)
        out[name] = {
            "input_ids": ids,
            "logits": [r7(row) for row in logits.numpy()],
            "argmax": [int(x) for x in logits.argmax(-1)],
            "surprisal_bits": [None if b is None else float(f"{b:.7g}") for b in bits],
            "top5": [[[int(i), float(f"{p:.7g}")] for i, p in zip(ti, tp)] for ti, tp in zip(top.indices, top.values)],
            "last_hidden_state": [r7(row) for row in r.hidden_states[-1][0].numpy()],
            "last_block_output": [r7(row) for row in captured["last"][0].numpy()],
            "attentions": [a[0].numpy().round(7).tolist() for a in r.attentions],
            "hidden_state_l2_norms": [r7(h[0].norm(dim=-1).numpy()) for h in r.hidden_states],
        }
    return out


def convert(hf_dir, out_file, pre_name, extra=()):
    """llama.cpp's converter, unmodified, except that a freshly trained BPE tokenizer (whose hash its
    table cannot know) is given the named pre-tokenizer."""
    code = f"""
import sys, importlib.util
sys.path.insert(0, {LLAMA_CPP_DIR!r})
spec = importlib.util.spec_from_file_location('convert_hf_to_gguf', {os.path.join(LLAMA_CPP_DIR, 'convert_hf_to_gguf.py')!r})
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
from conversion import base
orig = base.TextModel.get_vocab_base_pre
def pre(self, tok):
    try:
        return orig(self, tok)
    except NotImplementedError:
        return {pre_name!r}
base.TextModel.get_vocab_base_pre = pre
sys.argv = ['convert_hf_to_gguf.py', {hf_dir!r}, '--outtype', 'f32', '--outfile', {out_file!r}] + {list(extra)!r}
mod.main()
"""
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)


def gguf_state_dict(path, model, arch):
    """The GGUF's tensors, dequantized, under the HF names (the converter's map inverted)."""
    sys.path.insert(0, os.path.join(LLAMA_CPP_DIR, "gguf-py"))
    import gguf
    from gguf.quants import dequantize
    cfg = model.config
    arch_id = {"olmo2": gguf.MODEL_ARCH.OLMO2, "smollm3": gguf.MODEL_ARCH.SMOLLM3}[arch]
    names = gguf.get_tensor_name_map(arch_id, cfg.num_hidden_layers)
    to_hf = {}
    for hf_name in model.state_dict():
        gg = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        to_hf[gg] = hf_name
    if cfg.tie_word_embeddings:
        to_hf.pop("output.weight", None)
    reader = gguf.GGUFReader(path)
    sd = {}
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(x) for x in reversed(t.shape)]) if w.ndim > 1 or len(t.shape) > 1 else w.reshape(-1)
        hf = to_hf[t.name]
        if arch == "smollm3" and (t.name.endswith("attn_q.weight") or t.name.endswith("attn_k.weight")):
            heads = cfg.num_attention_heads if t.name.endswith("attn_q.weight") else cfg.num_key_value_heads
            w = w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
        sd[hf] = torch.from_numpy(np.ascontiguousarray(w))
    missing = set(model.state_dict()) - set(sd) - ({"lm_head.weight"} if cfg.tie_word_embeddings else set())
    assert not missing, f"{path}: no GGUF tensor for {sorted(missing)}"
    return sd


def max_diff(a, b):
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def make(arch, out_root, seed_offset):
    cls_name, kwargs, tok_from, pre_name, seed, quants, matrix_std, stored = ARCHS[arch]
    seed += seed_offset
    out = os.path.join(out_root, arch)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    cfg = getattr(transformers, cls_name)(**COMMON, **kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    reinit(model, seed, cfg.tie_word_embeddings, matrix_std)
    model.to(stored).save_pretrained(out, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(FIXTURES, tok_from, f), os.path.join(out, f))
    if os.path.exists(os.path.join(out, "generation_config.json")):
        os.remove(os.path.join(out, "generation_config.json"))
    model = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").float().eval()
    seqs = sequences(seed)
    ref = reference(model, seqs)
    meta = {"arch": arch, "seed": seed, "transformers": transformers.__version__, "torch": torch.__version__}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"meta": meta, "sequences": ref}, f)
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, f"{arch}-F32.gguf")
        convert(out, f32, pre_name)
        check = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").float().eval()
        check.load_state_dict(gguf_state_dict(f32, check, arch), strict=False)
        r32 = reference(check, seqs)
        d = max(max_diff(r32[n]["logits"], ref[n]["logits"]) for n in seqs)
        assert d <= 1e-5, f"{arch}: the F32 GGUF's weights give logits {d} away from the HF folder's"
        summary["F32 vs HF logits"] = d
        for q in quants:
            dst = os.path.join(out, f"{arch}-{q}.gguf")
            subprocess.run([LLAMA_QUANTIZE, f32, dst, q, "2"], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            qm = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").float().eval()
            qm.load_state_dict(gguf_state_dict(dst, qm, arch), strict=False)
            rq = reference(qm, seqs)
            summary[f"{q} vs HF logits"] = max(max_diff(rq[n]["logits"], ref[n]["logits"]) for n in seqs)
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
