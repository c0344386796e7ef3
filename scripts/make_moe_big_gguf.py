#!/usr/bin/env python3
"""Write a Qwen3-30B-A3B-shaped GGUF (general.architecture = qwen3moe) with random but well-formed
quantized weights, for the memory and speed benchmark of mixture-of-experts files (BENCHMARKS.md).

usage: python scripts/make_moe_big_gguf.py OUT.gguf [--experts q4_k|mxfp4] [--layers N] [--seed N]
Needs numpy and gguf (gguf-py 0.19). The file is about 17 GiB (48 layers); it is streamed to disk
tensor by tensor, so the script needs little memory.

Shape (Qwen/Qwen3-30B-A3B's config.json as convert_hf_to_gguf.py writes it): hidden 2048, 48 blocks,
32 query heads and 4 KV heads of head_dim 128, per-head q/k RMSNorm, 128 experts of width 768 with
8 chosen per token (renormalized: llama.cpp's qwen3moe graph), vocab 151936, context 40960,
rope freq_base 1e6, RMS eps 1e-6, an untied output matrix. Expert tensors are the converter's
stacks: ffn_gate_exps / ffn_up_exps [128, 768, 2048] and ffn_down_exps [128, 2048, 768], with the
router ffn_gate_inp [128, 2048] in F32 (llama-quantize keeps it).

Types follow llama.cpp's Q4_K_M recipe in spirit: Q4_K matrices, Q6_K for attn_v and the experts'
down projection on the layers where use_more_bits holds, Q6_K output; with --experts mxfp4 every
expert tensor is MXFP4 instead (llama-quantize's MXFP4_MOE). The blocks are random bytes with their
scales overwritten by small finite values (weights of std about 0.02): Q4_K d ~ 1.2e-4, dmin 7.5 d;
Q6_K int8 scales 1..16, d ~ 1.1e-4; MXFP4 exponent byte 119 (scale 2^-9, values up to 0.023).
Norms are 1 + N(0, 0.02), the router N(0, 0.02), both F32.

Tokenizer (byte-level BPE, pre-tokenizer qwen2): the 256 GPT-2 byte characters, then every two-byte
string with its merge, then <|extra_N|> control tokens up to 151936 (<|endoftext|> = 151643).
"""
import argparse
import time

import numpy as np
import gguf
from gguf import GGUFWriter, GGMLQuantizationType as QT

HIDDEN, HEADS, KV, HEAD_DIM = 2048, 32, 4, 128
EXPERTS, TOP_K, WIDTH, DENSE_FF = 128, 8, 768, 6144
VOCAB, CONTEXT = 151936, 40960


def byte_chars():
    """The printable stand-in character of each byte (GPT-2's byte-level alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def vocab():
    ch = byte_chars()
    toks = list(ch)
    merges = []
    for a in ch:
        for b in ch:
            toks.append(a + b)
            merges.append(f"{a} {b}")
    types = [int(gguf.TokenType.NORMAL)] * len(toks)
    n = 0
    while len(toks) < VOCAB:
        toks.append("<|endoftext|>" if len(toks) == 151643 else f"<|extra_{n}|>")
        types.append(int(gguf.TokenType.CONTROL))
        n += 1
    return toks, types, merges


def more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def f16(x):
    return np.ascontiguousarray(np.asarray(x, dtype=np.float16)).view(np.uint8).reshape(-1, 2)


def blocks(rng, n_rows, cols, qt):
    """Random well-formed blocks for n_rows rows of `cols` values, as uint8 [n_rows, row bytes]."""
    bs, ts = gguf.GGML_QUANT_SIZES[qt]
    nb = n_rows * (cols // bs)
    b = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
    if qt == QT.Q4_K:
        d = (1.2e-4 * (0.75 + 0.5 * rng.random(nb))).astype(np.float16)
        b[:, 0:2] = f16(d)
        b[:, 2:4] = f16(d.astype(np.float32) * 7.5)
    elif qt == QT.Q6_K:
        b[:, 192:208] = rng.integers(1, 17, size=(nb, 16), dtype=np.int8).view(np.uint8)
        b[:, 208:210] = f16((1.1e-4 * (0.75 + 0.5 * rng.random(nb))).astype(np.float16))
    elif qt == QT.MXFP4:
        b[:, 0] = 119
    else:
        raise ValueError(qt)
    return b.reshape(n_rows, (cols // bs) * ts)


def plan(layers, expert_type):
    """[(name, shape in values, type)] in the converter's order."""
    out = [("token_embd.weight", (VOCAB, HIDDEN), QT.Q4_K)]
    q, kv = HEADS * HEAD_DIM, KV * HEAD_DIM
    for i in range(layers):
        p = f"blk.{i}."
        more = more_bits(i, layers)
        down = expert_type if expert_type == QT.MXFP4 else (QT.Q6_K if more else QT.Q4_K)
        out += [
            (p + "attn_norm.weight", (HIDDEN,), QT.F32),
            (p + "attn_q.weight", (q, HIDDEN), QT.Q4_K),
            (p + "attn_k.weight", (kv, HIDDEN), QT.Q4_K),
            (p + "attn_v.weight", (kv, HIDDEN), QT.Q6_K if more else QT.Q4_K),
            (p + "attn_output.weight", (HIDDEN, q), QT.Q4_K),
            (p + "attn_q_norm.weight", (HEAD_DIM,), QT.F32),
            (p + "attn_k_norm.weight", (HEAD_DIM,), QT.F32),
            (p + "ffn_norm.weight", (HIDDEN,), QT.F32),
            (p + "ffn_gate_inp.weight", (EXPERTS, HIDDEN), QT.F32),
            (p + "ffn_gate_exps.weight", (EXPERTS, WIDTH, HIDDEN), expert_type),
            (p + "ffn_up_exps.weight", (EXPERTS, WIDTH, HIDDEN), expert_type),
            (p + "ffn_down_exps.weight", (EXPERTS, HIDDEN, WIDTH), down),
        ]
    out += [("output_norm.weight", (HIDDEN,), QT.F32), ("output.weight", (VOCAB, HIDDEN), QT.Q6_K)]
    return out


def nbytes(shape, qt):
    bs, ts = gguf.GGML_QUANT_SIZES[qt]
    n = int(np.prod(shape))
    return n // bs * ts


def write(path, layers, expert_type, seed):
    rng = np.random.default_rng(seed)
    w = GGUFWriter(path, "qwen3moe")
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name("Qwen3 30B A3B Shaped Random")
    w.add_block_count(layers)
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(DENSE_FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_expert_count(EXPERTS)
    w.add_expert_used_count(TOP_K)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_expert_feed_forward_length(WIDTH)
    w.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_K_M))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    toks, types, merges = vocab()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(151643)
    w.add_add_bos_token(False)
    tensors = plan(layers, expert_type)
    for name, shape, qt in tensors:
        if qt == QT.F32:
            w.add_tensor_info(name, shape, np.dtype(np.float32), int(np.prod(shape)) * 4)
        else:
            bs, ts = gguf.GGML_QUANT_SIZES[qt]
            byte_shape = (*shape[:-1], shape[-1] // bs * ts)
            w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes(shape, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, shape, qt in tensors:
        if qt == QT.F32:
            std = 0.02
            base = 0.0 if "gate_inp" in name else 1.0
            w.write_tensor_data((base + std * rng.standard_normal(shape)).astype(np.float32))
        else:
            rows = int(np.prod(shape[:-1]))
            w.write_tensor_data(blocks(rng, rows, shape[-1], qt).reshape(*shape[:-1], -1))
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--experts", choices=["q4_k", "mxfp4"], default="q4_k")
    ap.add_argument("--layers", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t = time.time()
    write(a.out, a.layers, QT.MXFP4 if a.experts == "mxfp4" else QT.Q4_K, a.seed)
    print(f"wrote {a.out} in {time.time() - t:.0f} s")


if __name__ == "__main__":
    main()
