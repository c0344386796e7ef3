"""The Python package against the CLI's JSON (same model, same text): every number `prism.run`,
`generate` and `tokenize` return must be the one `prism run --json` prints; SAE features against
SAELens's own numbers; corpus shards byte for byte against `prism batch`."""

import hashlib
import json
import math

import numpy as np
import pytest

import prism
from conftest import FIXTURES, cli, cli_json

TEXT = "Purple is a mix of red and blue, and the sky is blue."


def nan_of(values):
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def test_run_matches_cli_json_for_every_capture(smollm2):
    ref = cli_json("run", "smollm2", "--text", TEXT, "--json", "--backend", "cpu",
                   "--attention", "--hidden", "--lens", "--top", "7")
    r = smollm2.run(TEXT, capture=["attention", "residual", "lens"], top=7)
    assert r["ids"].tolist() == [t["id"] for t in ref["tokens"]]
    assert r["tokens"] == [t["text"] for t in ref["tokens"]]
    n = len(ref["tokens"])
    # f64 statistics: serde_json's reading is within an ulp, so compare to 1e-12.
    for key in ["surprisal_bits", "entropy_bits"]:
        want = nan_of(ref[key])
        assert np.isnan(r[key][0]) and np.isnan(want[0])
        np.testing.assert_allclose(r[key][1:], want[1:], rtol=1e-12, atol=0)
    assert r["rank"].tolist() == [-1 if x is None else x for x in ref["rank"]]
    assert r["top_ids"].shape == (n, 7)
    assert r["top_ids"].tolist() == [[p["id"] for p in row] for row in ref["top"]]
    np.testing.assert_array_equal(r["top_p"], np.array([[p["p"] for p in row] for row in ref["top"]], dtype=np.float32))
    for key in ["total_bits", "bits_per_byte", "zstd_bits_per_byte"]:
        assert r[key] == pytest.approx(ref[key], rel=1e-12)
    assert r["zstd_bytes"] == ref["zstd_bytes"] and r["predicted_bytes"] == ref["predicted_bytes"]
    # f32 captures are printed exactly by the CLI.
    att = np.array(ref["attention"], dtype=np.float32)
    assert r["attention"].shape == (30, 9, n, n) == att.shape
    np.testing.assert_array_equal(r["attention"], att)
    np.testing.assert_allclose(r["attention"].sum(axis=-1), 1.0, atol=1e-5)
    hs = np.array(ref["hidden_states"], dtype=np.float32)
    assert r["residual"].shape == (31, n, 576)
    np.testing.assert_array_equal(r["residual"], hs)
    lens_ids = [[[p["id"] for p in pos] for pos in layer] for layer in ref["logit_lens"]]
    assert r["lens_ids"].tolist() == lens_ids
    np.testing.assert_array_equal(
        r["lens_p"], np.array([[[p["p"] for p in pos] for pos in layer] for layer in ref["logit_lens"]], dtype=np.float32))


def test_ids_in_give_the_same_run_as_text(smollm2):
    ids = smollm2.tokenize(TEXT)
    a, b = smollm2.run(TEXT), smollm2.run(np.array(ids))
    assert a["ids"].tolist() == ids
    np.testing.assert_array_equal(a["surprisal_bits"], b["surprisal_bits"])


def test_tokenize_and_decode_match_cli(smollm2):
    ref = cli_json("tokenize", "smollm2", "--text", TEXT, "--json")
    ids = smollm2.tokenize(TEXT)
    assert ids == ref["ids"]
    assert smollm2.decode(ids) == TEXT
    assert len(smollm2.token_texts(ids)) == len(ids)
    with_bos = smollm2.tokenize(TEXT, bos=True)
    assert len(with_bos) == len(ids) + 1 and with_bos[1:] == ids


def test_sites_and_logits_are_consistent_with_the_residual_stream(smollm2):
    r = smollm2.run(TEXT, capture=["sites", "residual", "logits"])
    n = len(r["ids"])
    # The residual after layer l is the one before it plus what attention and the MLP added.
    for layer in [0, 7, 29]:
        np.testing.assert_allclose(
            r["residual"][layer + 1],
            r["residual"][layer] + r["attn_out"][layer] + r["mlp_out"][layer], atol=2e-3, rtol=1e-4)
    assert r["logits"].shape == (n, 49152)
    assert r["top_ids"][:, 0].tolist() == r["logits"].argmax(axis=1).tolist()
    assert len(r["head_z"]) == 30 and r["head_z"][0].shape == (n, 9 * 64)


def test_interventions_as_dicts_match_the_cli_file(smollm2, tmp_path):
    ivs = [
        {"site": "head", "layer": 3, "head": 2, "op": "zero"},
        {"site": "mlp_out", "layer": 10, "op": "zero", "positions": [2, 3]},
    ]
    f = tmp_path / "iv.json"
    f.write_text(json.dumps(ivs))
    ref = cli_json("run", "smollm2", "--text", TEXT, "--json", "--backend", "cpu", "--interventions", f)
    r = smollm2.run(TEXT, interventions=ivs)
    plain = smollm2.run(TEXT)
    np.testing.assert_allclose(r["surprisal_bits"][1:], nan_of(ref["surprisal_bits"])[1:], rtol=1e-12)
    assert not np.allclose(r["surprisal_bits"][1:], plain["surprisal_bits"][1:])
    assert len(r["interventions"]) == 2
    # The JSON text itself is accepted too.
    t = smollm2.run(TEXT, interventions=json.dumps(ivs))
    np.testing.assert_array_equal(t["surprisal_bits"], r["surprisal_bits"])


def test_generate_matches_cli(smollm2):
    prompt = "The capital of France is"
    ref = cli_json("generate", "smollm2", "--prompt", prompt, "--max-tokens", "8", "--json", "--backend", "cpu")
    g = smollm2.generate(prompt, max_tokens=8)
    assert g["prompt_ids"] == ref["prompt_ids"]
    assert g["ids"] == [t["id"] for t in ref["tokens"]]
    assert g["text"] == ref["text"] and g["stop_reason"] == ref["stop_reason"]
    np.testing.assert_array_equal(g["p"], np.array([t["p"] for t in ref["tokens"]], dtype=np.float32))
    sampled = smollm2.generate(prompt, max_tokens=8, temperature=0.9, top_p=0.95, seed=3)
    ref_s = cli_json("generate", "smollm2", "--prompt", prompt, "--max-tokens", "8", "--json", "--backend", "cpu",
                     "--temperature", "0.9", "--top-p", "0.95", "--seed", "3")
    assert sampled["ids"] == [t["id"] for t in ref_s["tokens"]]


def test_experts_match_cli_on_a_mixture_of_experts_model():
    path = FIXTURES / "archs" / "qwen3moe" / "qwen3moe-Q8_0.gguf"
    m = prism.load(str(path))
    ids = [5, 17, 300, 42, 8, 99, 250]
    ref = cli_json("run", path, "--ids", ",".join(map(str, ids)), "--json", "--backend", "cpu", "--experts")
    r = m.run(ids, capture=["experts"])
    moe = [l for l, e in enumerate(ref["experts"]) if e]
    assert r["expert_layers"] == moe
    for i, layer in enumerate(moe):
        for p in range(len(ids)):
            chosen = ref["experts"][layer][p]
            assert r["expert_ids"][i, p, : len(chosen)].tolist() == [c["expert"] for c in chosen]
            for c in chosen:
                assert r["expert_weights"][i, p, c["expert"]] == np.float32(c["weight"])
            np.testing.assert_array_equal(r["router_probs"][i, p], np.array(ref["router_probs"][layer][p], dtype=np.float32))
    with pytest.raises(prism.PrismError, match="no mixture-of-experts"):
        prism.load("smollm2").run("hi there", capture=["experts"])


def test_features_match_saelens():
    ref = json.loads((FIXTURES / "saes" / "reference.json").read_text())
    m = prism.load(str(FIXTURES / "archs" / "qwen3"))
    for name in ["relu-resid-pre-1", "jumprelu-resid-post-0", "topk-mlp-out-1"]:
        sae = prism.load_sae(FIXTURES / "saes" / name)
        for seq in ref["saes"][name]["sequences"].values():
            r = m.run(seq["input_ids"], capture=["features"], sae=sae)
            f = r["features"]
            assert f.shape == (len(seq["input_ids"]), sae.d_sae)
            assert (f != 0).sum(axis=1).tolist() == seq["l0"], name
            for t, want in enumerate(seq["features"]):
                for fid, act in want:
                    assert f[t, fid] == pytest.approx(act, rel=1e-4, abs=1e-5), (name, t, fid)


def test_bad_input_raises_prism_error(smollm2, tmp_path):
    with pytest.raises(prism.PrismError, match="capture"):
        smollm2.run(TEXT, capture=["everything"])
    with pytest.raises(prism.PrismError, match="empty"):
        smollm2.run("")
    with pytest.raises(prism.PrismError, match="out of range|vocabulary"):
        smollm2.run([1, 2, 10**9])
    with pytest.raises(prism.PrismError, match="layer"):
        smollm2.run(TEXT, interventions=[{"site": "resid_post", "layer": 99, "op": "zero"}])
    with pytest.raises(prism.PrismError):
        smollm2.run(TEXT, interventions=[{"site": "nowhere", "layer": 1, "op": "zero"}])
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    with pytest.raises(prism.PrismError, match="broken.gguf"):
        prism.load(str(bad))
    with pytest.raises(prism.PrismError):
        prism.load(str(tmp_path / "missing"))
    with pytest.raises(prism.PrismError, match="backend"):
        prism.load("smollm2", backend="tpu")


def sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_batch_shards_from_python_equal_prism_batch(smollm2, tmp_path):
    corpus = tmp_path / "corpus.txt"
    docs = [f"Document {i}: the {['red', 'blue', 'green'][i % 3]} fox counts to {i * 7}." for i in range(11)]
    corpus.write_text("\n".join(docs) + "\n")
    assert prism.read_corpus(corpus) == docs
    cli("batch", "smollm2", "--corpus", corpus, "--out", tmp_path / "cli", "--context", "16",
        "--shard-docs", "4", "--top", "3", "--backend", "cpu")
    out = tmp_path / "py"
    b = prism.Batch(smollm2, corpus, out, context=16, top=3, shard_docs=4)
    assert (b.shards, b.done) == (3, 0)
    pending = b.pending()
    with pytest.raises(prism.PrismError, match="comes next"):
        i, first, texts = pending[1]
        b.commit(i, smollm2.batch_shard(texts, first, context=16, top=3))
    for i, first, texts in pending:
        b.commit(i, smollm2.batch_shard(texts, first, context=16, top=3))
    assert b.done == 3 and b.pending() == []
    want = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    got = json.loads((out / "manifest.json").read_text())
    assert got["shards"] == want["shards"] and got["settings"] == want["settings"]
    for s in want["shards"]:
        assert sha(out / s["tokens_file"]) == s["tokens_sha256"]
    # The folder is a batch folder the CLI accepts.
    summary = json.loads(cli("batch", "--summary", out, "--json").stdout)
    assert summary["done"] == 11
    # Other settings on the same folder are refused.
    with pytest.raises(prism.PrismError, match="differ"):
        prism.Batch(smollm2, corpus, out, context=8, top=3, shard_docs=4)


def test_activation_cache_loads_with_datasets_and_python_shards_equal_the_cli(tmp_path):
    """`prism batch --pack --sites --sae` and the same run through `Model.batch_shard` give the
    same files; `datasets.load_from_disk` (what SAELens's ActivationsStore calls) opens the
    activation cache, and each row holds what `Model.run` captures for its token_ids."""
    datasets = pytest.importorskip("datasets")
    qwen = FIXTURES / "archs" / "qwen3"
    sae_dir = FIXTURES / "saes" / "relu-resid-pre-1"
    words = "the cat sat on a mat while purple rain fell over the quiet blue river".split()
    docs = [" ".join(words[(i * 3) % 7: (i * 3) % 7 + 2 + i % 9]) for i in range(12)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(docs) + "\n")
    sites = "resid_post@1,blocks.0.hook_mlp_out"
    cli("batch", qwen, "--corpus", corpus, "--out", tmp_path / "cli", "--context", "12", "--shard-docs", "5",
        "--top", "2", "--pack", "--bos", "--sites", sites, "--sae", sae_dir, "--backend", "cpu")
    m = prism.load(str(qwen), backend="cpu")
    sae = prism.load_sae(sae_dir)
    settings = dict(context=12, top=2, bos=True, pack=True, sites=sites.split(","), sae=sae)
    out = tmp_path / "py"
    b = prism.Batch(m, corpus, out, shard_docs=5, **settings)
    assert b.settings["sites"] == ["resid_post@1", "mlp_added@0"] and b.settings["pack"]
    for i, first, texts in b.pending():
        shard = m.batch_shard(texts, first, **settings)
        assert shard["activations"] is not None and shard["features_parquet"] is not None
        b.commit(i, shard)
    want = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    got = json.loads((out / "manifest.json").read_text())
    assert got["shards"] == want["shards"] and got["activations"] == want["activations"]
    for rel in ["activations/state.json", "activations/dataset_info.json"]:
        assert (out / rel).read_bytes() == (tmp_path / "cli" / rel).read_bytes()
    # Without the SAE the settings differ.
    with pytest.raises(prism.PrismError, match="differ"):
        prism.Batch(m, corpus, out, shard_docs=5, **dict(settings, sae=None))

    ds = datasets.load_from_disk(str(out / "activations"))
    assert set(ds.column_names) == {"blocks.1.hook_resid_post", "blocks.0.hook_mlp_out", "token_ids"}
    assert ds.features["blocks.1.hook_resid_post"].shape == (12, m.hidden)
    assert len(ds) == sum(s["activation_rows"] for s in got["shards"]) > 0
    ds.set_format("numpy")
    for row in ds:
        ids = row["token_ids"].tolist()
        r = m.run(ids, capture=["residual", "sites"])
        np.testing.assert_array_equal(row["blocks.1.hook_resid_post"], r["residual"][2])
        np.testing.assert_array_equal(row["blocks.0.hook_mlp_out"], r["mlp_out"][0])
