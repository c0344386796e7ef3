"""scripts/ray_batch.py on a local Ray cluster (two workers, one Prism model each) against
`prism batch` on the same corpus: shard for shard the same files (same sha256, so the same numbers),
and a folder half made by the binding is resumed, not redone."""

import json
import os
import subprocess
import sys

import pytest

import prism
from conftest import ROOT, cli

try:
    import ray  # noqa: F401
except ImportError:
    if os.environ.get("PRISM_REQUIRE_RAY"):
        raise
    pytest.skip("ray is not installed (pip install 'ray[data]')", allow_module_level=True)


def test_ray_pipeline_writes_the_shards_prism_batch_writes(tmp_path, smollm2):
    corpus = tmp_path / "corpus.jsonl"
    words = ["prediction", "compression", "purple", "blue", "red", "layers", "experts", "tokens"]
    docs = [" ".join(words[(i * 3 + j) % len(words)] for j in range(3 + i % 9)) + f" ({i})." for i in range(30)]
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    common = ["--context", "12", "--top", "3", "--shard-docs", "4"]
    cli("batch", "smollm2", "--corpus", corpus, "--out", tmp_path / "cli", "--backend", "cpu", *common)
    want = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert len(want["shards"]) == 8

    out = tmp_path / "ray"
    # Two shards made beforehand through the binding: the pipeline must resume after them.
    b = prism.Batch(smollm2, corpus, out, context=12, top=3, shard_docs=4)
    for i, first, texts in b.pending()[:2]:
        b.commit(i, smollm2.batch_shard(texts, first, context=12, top=3))
    env = dict(os.environ, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", RAY_USAGE_STATS_ENABLED="0")
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ray_batch.py"), "smollm2", "--corpus", str(corpus),
         "--out", str(out), "--workers", "2", *common],
        capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "8 shards, 2 done, 6 to make" in p.stderr
    got = json.loads((out / "manifest.json").read_text())
    assert got["shards"] == want["shards"]
    assert got["settings"] == want["settings"] and got["model_sha256"] == want["model_sha256"]
    for s in want["shards"]:
        for f in [s["tokens_file"], s["docs_file"]]:
            assert (out / f).read_bytes() == (tmp_path / "cli" / f).read_bytes(), f
    # Done: a rerun has nothing to make.
    again = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ray_batch.py"), "smollm2", "--corpus", str(corpus),
         "--out", str(out), *common], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "0 to make" in again.stderr
    # A changed setting is refused with the folder named.
    bad = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ray_batch.py"), "smollm2", "--corpus", str(corpus),
         "--out", str(out), "--context", "10", "--top", "3", "--shard-docs", "4"],
        capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "differ" in bad.stderr


def test_ray_pipeline_writes_the_activation_cache_and_features_prism_batch_writes(tmp_path):
    qwen = ROOT / "tests" / "fixtures" / "archs" / "qwen3"
    sae = ROOT / "tests" / "fixtures" / "saes" / "relu-resid-pre-1"
    corpus = tmp_path / "corpus.txt"
    words = ["prediction", "compression", "purple", "blue", "red", "layers", "experts", "tokens"]
    corpus.write_text("".join(" ".join(words[(i + j) % 8] for j in range(2 + i % 7)) + "\n" for i in range(14)))
    common = ["--context", "10", "--top", "2", "--shard-docs", "4", "--pack", "--bos",
              "--sites", "resid_post@1,resid_pre@0", "--dtype", "f16", "--sae", str(sae)]
    cli("batch", qwen, "--corpus", corpus, "--out", tmp_path / "cli", "--backend", "cpu", *common)
    want = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    env = dict(os.environ, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", RAY_USAGE_STATS_ENABLED="0")
    out = tmp_path / "ray"
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ray_batch.py"), str(qwen), "--corpus", str(corpus),
         "--out", str(out), "--workers", "2", *common],
        capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    got = json.loads((out / "manifest.json").read_text())
    assert got["shards"] == want["shards"] and got["settings"] == want["settings"]
    assert all(s["activations_file"] and s["features_file"] for s in got["shards"])
    for s in want["shards"]:
        for f in [s["tokens_file"], s["docs_file"], s["activations_file"], s["features_file"]]:
            assert (out / f).read_bytes() == (tmp_path / "cli" / f).read_bytes(), f
    for f in ["activations/state.json", "activations/dataset_info.json"]:
        assert (out / f).read_bytes() == (tmp_path / "cli" / f).read_bytes(), f
