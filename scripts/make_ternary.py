#!/usr/bin/env python3
"""TQ1_0 and TQ2_0 (ternary), Q1_0 (binary: +-d) and Q2_0 (-1, 0, 1, 2 times d) files of the tiny
Qwen3 fixture, with transformers references.

Writes into tests/fixtures/archs/qwen3/:
  qwen3-TQ1_0.gguf, qwen3-TQ2_0.gguf   llama.cpp's convert_hf_to_gguf.py (F32) on the fixture's HF
                                       folder, then llama-quantize TQ1_0 / TQ2_0
  reference-TQ1_0.json, reference-TQ2_0.json
                                       transformers' own GGUF loader (`from_pretrained(.., gguf_file=..)`,
                                       which dequantizes with gguf-py) on each file, with the folder's
                                       config, float32, eager attention; the fields of
                                       make_block_shapes.py's references
  dequant_checks.json                  gguf-py's values for the first blocks of one tensor per type
The sequences are those of the folder's reference.json. gguf-py 0.19 has no Q1_0 and Q2_0 decoders:
for those two types gguf-py's `dequantize` (which transformers' GGUF loader and the checks call) is
given ggml's own (`dequantize_row_q1_0`, `dequantize_row_q2_0` of the same llama.cpp build's
libggml-base, through ctypes); every other type stays gguf-py's.

Pinned: Python 3.11, torch 2.15.0 (CPU), transformers 5.25.0, gguf 0.19; llama.cpp commit 0c1e570
(the copy in the llama-cpp-python 0.3.36 sdist, vendor/llama.cpp) for the converter and llama-quantize.

  LLAMA_CPP_DIR=/path/to/llama.cpp HF_HUB_OFFLINE=1 python scripts/make_ternary.py
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_block_shapes as blocks  # noqa: E402
import make_experts  # noqa: E402

FOLDER = os.path.join(blocks.FIXTURES, "qwen3")
QUANTS = ["TQ1_0", "TQ2_0", "Q1_0", "Q2_0"]


def ggml_decoders():
    """gguf-py's dequantize, with ggml's C decoders for the types gguf-py lacks."""
    import ctypes

    import numpy as np
    sys.path.insert(0, os.path.join(blocks.LLAMA_CPP_DIR, "gguf-py"))
    import gguf
    import gguf.quants
    lib = ctypes.CDLL(os.path.join(os.path.dirname(blocks.LLAMA_QUANTIZE), "libggml-base.so"))
    own = {gguf.GGMLQuantizationType.Q1_0: lib.dequantize_row_q1_0,
           gguf.GGMLQuantizationType.Q2_0: lib.dequantize_row_q2_0}
    plain = gguf.quants.dequantize

    def dequantize(data, qtype):
        if qtype not in own:
            return plain(data, qtype)
        values, nbytes = gguf.GGML_QUANT_SIZES[qtype]
        raw = np.ascontiguousarray(np.asarray(data).view(np.uint8))
        shape = raw.shape[:-1] + (raw.shape[-1] // nbytes * values,)
        out = np.empty(shape, dtype=np.float32)
        own[qtype](ctypes.c_void_p(raw.ctypes.data), ctypes.c_void_p(out.ctypes.data),
                   ctypes.c_int64(out.size))
        return out

    gguf.dequantize = dequantize
    gguf.quants.dequantize = dequantize


def main():
    torch.set_num_threads(2)
    ggml_decoders()
    seqs = {n: s["input_ids"] for n, s in json.load(open(os.path.join(FOLDER, "reference.json")))["sequences"].items()}
    cfg = transformers.AutoConfig.from_pretrained(FOLDER)
    meta = {"transformers": transformers.__version__, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        work = os.path.join(tmp, "qwen3")
        shutil.copytree(FOLDER, work, ignore=shutil.ignore_patterns("*.gguf", "reference*.json", "dequant_checks.json"))
        f32 = os.path.join(work, "qwen3-F32.gguf")
        blocks.convert(work, f32, "qwen2")
        for q in QUANTS:
            name = f"qwen3-{q}.gguf"
            dst = os.path.join(work, name)
            subprocess.run([blocks.LLAMA_QUANTIZE, f32, dst, q, "2"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                work, gguf_file=name, config=cfg, attn_implementation="eager", dtype=torch.float32).eval()
            ref = blocks.reference(model, seqs)
            shutil.copy(dst, os.path.join(FOLDER, name))
            with open(os.path.join(FOLDER, f"reference-{q}.json"), "w") as fh:
                json.dump({"meta": dict(meta, gguf=name), "sequences": ref}, fh)
            print(q, "written")
        os.remove(f32)
        for q in QUANTS:
            os.remove(os.path.join(work, f"qwen3-{q}.gguf"))
    checks = os.path.join(tmp_checks := tempfile.mkdtemp(), "x")
    os.makedirs(checks)
    for q in QUANTS:
        shutil.copy(os.path.join(FOLDER, f"qwen3-{q}.gguf"), checks)
    make_experts.dequant_checks(checks)
    shutil.copy(os.path.join(checks, "dequant_checks.json"), os.path.join(FOLDER, "dequant_checks.json"))
    shutil.rmtree(tmp_checks)


if __name__ == "__main__":
    main()
