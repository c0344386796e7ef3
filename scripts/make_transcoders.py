#!/usr/bin/env python3
"""Tiny random transcoder sets in circuit-tracer's layouts, and SAEs on the sites a post-norm
block moves (TransformerLens's hook_mlp_out / hook_attn_out after Gemma's post-norms), with the
numbers of the field's own loaders on transformers' activations.

It writes tests/fixtures/saes/transcoders/:
  circuit-tracer-qwen3/       config.yaml (model_kind transcoder_set, mlp.hook_in -> mlp.hook_out)
                              + layer_0.safetensors (ReLU, W_skip) + layer_1.safetensors (JumpReLU),
                              written by circuit-tracer's own SingleLayerTranscoder.to_safetensors,
                              on tests/fixtures/archs/qwen3
  gemma-scope-gemma2/         config.yaml (ln2.hook_normalized -> hook_mlp_out) listing Gemma Scope
                              transcoders by their hf:// paths, the files under the same paths
                              (np.savez params.npz: W_enc [d_model, d_sae], JumpReLU), on archs/gemma2
  gemma-scope-2-gemma2/       config.yaml (hook_resid_mid -> hook_mlp_out) listing Gemma Scope 2
                              params.safetensors (lowercase w_enc, affine_skip_connection), on gemma2
  saelens-gemma2-mlp-out-1/, saelens-gemma2-attn-out-0/
                              SAELens SAEs (save_model) on blocks.L.hook_mlp_out / hook_attn_out of
                              the gemma2 fixture: after post_feedforward_layernorm /
                              post_attention_layernorm, where TransformerLens puts those hooks
  gemma-scope-2b-pt-mlp/…, gemma-scope-2b-pt-att/…
                              Gemma Scope 1 params.npz (hook_mlp_out, attn.hook_z), read back by
                              SAELens's gemma_2_sae_huggingface_loader
  gemma-scope-2-tiny-pt/{mlp_out,attn_out,transcoder}/…
                              Gemma Scope 2 params.safetensors + config.json (hf_hook_point_in; the
                              transcoder with affine_skip_connection), read back by SAELens's
                              gemma_3_sae_huggingface_loader (its Hub downloads pointed at the folder)
  reference.json              per set (or SAE) and layer and sequence of the model's reference:
    features[t]   the top 8 activations [[id, act], ...] (circuit-tracer's `encode`, SAELens's)
    l0[t]
    reconstruction  mse (squared error summed over dims, mean over tokens) and explained_variance
                  (SAELens's ExplainedVarianceCalculator) of the output site; clean_bits and
                  spliced_bits (the output site replaced by the transcoder's `decode(encode(x), x)`
                  at every position of that one layer, by a transformers forward hook)
    clamps        total surprisal with the most active feature clamped to 0 and to 2x (SAEs) or
                  20x (transcoders) its largest activation at every position, the error term kept
                  (for a transcoder the output site gains (v - f_j(input)) * W_dec[j]); for
                  transcoders also surprisal_bits, each predicted token's

circuit-tracer's loaders are used as its `load_transcoders` dispatches them (`load_transcoder_set`
with special_load_fn "gemma-scope" for .npz files of a gemma-scope repo, "gemma-scope-2" for a
gemma-scope-2 repo, else its own layout), since its hf_utils module does not import with the
huggingface_hub that transformers 5 needs. Its hooks map onto transformers' modules as its own
nnsight map (circuit_tracer/utils/tl_nnsight_mapping.py) places them: mlp.hook_in = the MLP's
input, mlp.hook_out = the MLP's output, hook_resid_mid = the input of the MLP's norm,
ln2.hook_normalized = that norm's `_norm` output (before its gain), hook_mlp_out = the output of
post_feedforward_layernorm (Gemma) or of the MLP.

Pinned: Python 3.11, torch 2.15.0 (CPU), transformers 5.25.0, sae-lens 6.54.12, circuit-tracer 0.5.0
(installed --no-deps: it pins transformers <= 4.57, which its transcoder module does not use).

  HF_HUB_OFFLINE=1 python scripts/make_transcoders.py [--seed-offset N]
"""
import argparse
import json
import os
import shutil

import numpy as np
import torch
import transformers
from circuit_tracer.transcoder.activation_functions import JumpReLU
from circuit_tracer.transcoder.single_layer_transcoder import SingleLayerTranscoder, load_transcoder_set
from safetensors.torch import save_file
from sae_lens import StandardSAE, StandardSAEConfig, JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.evals import ExplainedVarianceCalculator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHS = os.path.join(ROOT, "tests", "fixtures", "archs")
OUT = os.path.join(ROOT, "tests", "fixtures", "saes", "transcoders")
D_SAE = 256


def load(name):
    path = os.path.join(ARCHS, name)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager",
                                                              dtype=torch.float32).eval()
    seqs = {n: s["input_ids"] for n, s in json.load(open(os.path.join(path, "reference.json")))["sequences"].items()}
    return model, seqs


def mlp_norm(layer):
    return getattr(layer, "pre_feedforward_layernorm", None) or layer.post_attention_layernorm


def input_point(model, layer, hook):
    """(module, kind) where circuit-tracer's input hook reads: kind "pre" (the module's input),
    "out" (its output) or "norm" (the norm's `_norm` output)."""
    blk = model.model.layers[layer]
    return {"mlp.hook_in": (blk.mlp, "pre"), "hook_resid_mid": (mlp_norm(blk), "pre"),
            "ln2.hook_normalized": (mlp_norm(blk), "norm")}[hook]


def output_point(model, layer, hook):
    """The module whose output circuit-tracer's output hook (or SAELens's hook_attn_out) is."""
    blk = model.model.layers[layer]
    gemma = hasattr(blk, "post_feedforward_layernorm")
    return {"mlp.hook_out": blk.mlp,
            "hook_mlp_out": blk.post_feedforward_layernorm if gemma else blk.mlp,
            # Gemma's post_attention_layernorm normalizes the attention's output.
            "hook_attn_out": blk.post_attention_layernorm if gemma else blk.self_attn}[hook]


def bits_of(model, ids):
    """The surprisal in bits of each predicted token (ids[1:])."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    return [float(-logp[i - 1, ids[i]] / np.log(2)) for i in range(1, len(ids))]


def run(model, ids, inp, out_mod, replace=None):
    """Runs ids; returns (input activation or None, output activation, per-token bits). With replace,
    the output module's output becomes replace(input, output)."""
    seen, handles = {}, []
    if inp is not None:
        mod, kind = inp
        if kind == "pre":
            handles.append(mod.register_forward_pre_hook(lambda m, a: seen.update(x=a[0].detach().clone())))
        elif kind == "out":
            handles.append(mod.register_forward_hook(lambda m, a, o: seen.update(x=o.detach().clone())))
        else:
            orig = mod._norm

            def norm(x, orig=orig):
                y = orig(x)
                seen["x"] = y.detach().clone()
                return y
            mod._norm = norm

    def post(m, a, o):
        y = o[0] if isinstance(o, tuple) else o
        seen["y"] = y.detach().clone()
        if replace is None:
            return None
        r = replace(seen.get("x"), y).to(y.dtype)
        return (r, *o[1:]) if isinstance(o, tuple) else r

    handles.append(out_mod.register_forward_hook(post))
    bits = bits_of(model, ids)
    for h in handles:
        h.remove()
    if inp is not None and inp[1] == "norm":
        del inp[0]._norm
    x = seen.get("x")
    return (x[0] if x is not None else None), seen["y"][0], bits


def summarize(f, y, recon, clean, spliced, ids):
    top = torch.topk(f, 8, dim=-1)
    ev = ExplainedVarianceCalculator()
    ev.add_batch(sae_output=recon, hidden_acts=y)
    return {"input_ids": ids,
            "features": [[[int(i), float(f"{v:.7g}")] for i, v in zip(ti, tv) if v != 0]
                         for ti, tv in zip(top.indices.tolist(), top.values.tolist())],
            "l0": [int(n) for n in (f != 0).sum(-1)],
            "reconstruction": {"mse": float((y - recon).pow(2).sum(-1).mean()),
                               "explained_variance": float(ev.compute()),
                               "clean_bits": clean, "spliced_bits": spliced}}


def random_transcoder(d, seed, scale, jump, skip):
    g = torch.Generator().manual_seed(seed)
    act = JumpReLU(0.05 + 0.25 * torch.rand(D_SAE, generator=g), 0.1) if jump else torch.nn.functional.relu
    tc = SingleLayerTranscoder(d, D_SAE, act, 0, skip_connection=skip, device=torch.device("cpu"),
                               dtype=torch.float32)
    with torch.no_grad():
        w = torch.randn(D_SAE, d, generator=g)
        w = w / w.norm(dim=-1, keepdim=True) * (0.5 + torch.rand(D_SAE, 1, generator=g))
        tc.W_dec.copy_(0.3 * w)
        tc.W_enc.copy_(w / scale + 0.02 * torch.randn(D_SAE, d, generator=g) / scale)
        tc.b_enc.copy_(-0.3 - 0.2 * torch.rand(D_SAE, generator=g))
        tc.b_dec.copy_(0.05 * torch.randn(d, generator=g))
        if skip:
            tc.W_skip.copy_(0.05 * torch.randn(d, d, generator=g))
    return tc


def measure_set(model, seqs, ts, in_hook, out_hook):
    layers = {}
    for layer in range(len(ts)):
        tc = ts[layer]
        inp, out_mod = input_point(model, layer, in_hook), output_point(model, layer, out_hook)
        per = {}
        for seq, ids in seqs.items():
            x, y, clean = run(model, ids, inp, out_mod)
            clean = sum(clean)
            with torch.no_grad():
                f = tc.encode(x)
                recon = tc.decode(f, x)
                _, _, spliced = run(model, ids, inp, out_mod, replace=lambda xi, yo: tc.decode(tc.encode(xi[0]), xi[0])[None])
                spliced = sum(spliced)
                # Clamps in the pass: the output gains (v - f_j(input)) * W_dec[j], so that only
                # feature j changes and the transcoder's error term stays.
                j = int(f.mean(0).argmax())
                clamps = []
                # 0 ablates; 20x its largest activation moves the total by far more than the
                # 0.01 bits per token a test allows.
                for v in (0.0, 20.0 * float(f[:, j].max())):
                    def clamp(xi, yo, j=j, v=v):
                        return yo + (v - tc.encode(xi)[..., j:j + 1]) * tc.W_dec[j]
                    tok = run(model, ids, inp, out_mod, replace=clamp)[2]
                    clamps.append({"feature": j, "value": v, "bits": sum(tok), "surprisal_bits": tok})
            per[seq] = dict(summarize(f, y, recon, clean, spliced, ids), clamps=clamps)
        print(in_hook, "->", out_hook, layer, {s: (np.mean(v["l0"]), round(v["reconstruction"]["spliced_bits"] - v["reconstruction"]["clean_bits"], 3)) for s, v in per.items()})
        layers[str(layer)] = per
    return {"feature_input_hook": in_hook, "feature_output_hook": out_hook, "layers": layers}


def write_config(folder, in_hook, out_hook, transcoders=None):
    lines = ["model_kind: transcoder_set", "model_name: tiny-random", f'feature_input_hook: "{in_hook}"',
             f'feature_output_hook: "{out_hook}"', "scan: tiny-random/transcoders"]
    if transcoders:
        lines.append("transcoders:")
        lines += [f'  - "{t}"' for t in transcoders]
    with open(os.path.join(folder, "config.yaml"), "w") as fh:
        fh.write("# A tiny random transcoder set in circuit-tracer's layout.\n" + "\n".join(lines) + "\n")


def scale_of(model, seqs, layer, in_hook):
    x, _, _ = run(model, seqs["seq33"], input_point(model, layer, in_hook), output_point(model, layer, "mlp.hook_out"))
    return float(x.norm(dim=-1).mean()) / 4


def circuit_tracer_qwen3(a, ref):
    model, seqs = load("qwen3")
    folder = os.path.join(OUT, "circuit-tracer-qwen3")
    os.makedirs(folder)
    hooks = ("mlp.hook_in", "mlp.hook_out")
    for layer in range(2):
        tc = random_transcoder(256, 6000 + layer + a.seed_offset, scale_of(model, seqs, layer, hooks[0]),
                               jump=layer == 1, skip=layer == 0)
        tc.to_safetensors(os.path.join(folder, f"layer_{layer}.safetensors"))
    write_config(folder, *hooks)
    paths = {layer: os.path.join(folder, f"layer_{layer}.safetensors") for layer in range(2)}
    ts = load_transcoder_set(paths, scan="x", feature_input_hook=hooks[0], feature_output_hook=hooks[1],
                             device=torch.device("cpu"), lazy_encoder=False, lazy_decoder=False)
    ref["sets"]["circuit-tracer-qwen3"] = dict(measure_set(model, seqs, ts, *hooks), model="archs/qwen3")


def gemma_scope_sets(a, ref):
    model, seqs = load("gemma2")
    # Gemma Scope's npz transcoders, listed by their Hub paths and found under the config's folder.
    folder = os.path.join(OUT, "gemma-scope-gemma2")
    hooks = ("ln2.hook_normalized", "hook_mlp_out")
    repo = "google/gemma-scope-2b-pt-transcoders"
    rels = [f"layer_{layer}/width_256/average_l0_20/params.npz" for layer in range(2)]
    for layer, rel in enumerate(rels):
        tc = random_transcoder(256, 6100 + layer + a.seed_offset, scale_of(model, seqs, layer, hooks[0]), True, False)
        os.makedirs(os.path.dirname(os.path.join(folder, rel)), exist_ok=True)
        with torch.no_grad():
            np.savez(os.path.join(folder, rel), W_enc=tc.W_enc.T.contiguous().numpy(), W_dec=tc.W_dec.numpy(),
                     b_enc=tc.b_enc.numpy(), b_dec=tc.b_dec.numpy(), threshold=tc.activation_function.threshold.numpy())
    write_config(folder, *hooks, [f"hf://{repo}/{rel}" for rel in rels])
    ts = load_transcoder_set({i: os.path.join(folder, r) for i, r in enumerate(rels)}, scan="x",
                             feature_input_hook=hooks[0], feature_output_hook=hooks[1],
                             device=torch.device("cpu"), special_load_fn="gemma-scope")
    ref["sets"]["gemma-scope-gemma2"] = dict(measure_set(model, seqs, ts, *hooks), model="archs/gemma2")
    # Gemma Scope 2's params.safetensors with an affine skip connection, on hook_resid_mid.
    folder = os.path.join(OUT, "gemma-scope-2-gemma2")
    hooks = ("hook_resid_mid", "hook_mlp_out")
    repo = "google/gemma-scope-2-270m-pt"
    rels = [f"transcoder/layer_{layer}_width_256_l0_small/params.safetensors" for layer in range(2)]
    for layer, rel in enumerate(rels):
        tc = random_transcoder(256, 6200 + layer + a.seed_offset, scale_of(model, seqs, layer, hooks[0]), True, True)
        os.makedirs(os.path.dirname(os.path.join(folder, rel)), exist_ok=True)
        save_file({"w_enc": tc.W_enc.T.contiguous().detach(), "w_dec": tc.W_dec.detach().contiguous(),
                   "b_enc": tc.b_enc.detach(), "b_dec": tc.b_dec.detach(),
                   "threshold": tc.activation_function.threshold.detach(),
                   "affine_skip_connection": tc.W_skip.T.contiguous().detach()}, os.path.join(folder, rel))
    write_config(folder, *hooks, [f"hf://{repo}/{rel}" for rel in rels])
    ts = load_transcoder_set({i: os.path.join(folder, r) for i, r in enumerate(rels)}, scan="x",
                             feature_input_hook=hooks[0], feature_output_hook=hooks[1],
                             device=torch.device("cpu"), special_load_fn="gemma-scope-2",
                             lazy_encoder=False, lazy_decoder=False)
    ref["sets"]["gemma-scope-2-gemma2"] = dict(measure_set(model, seqs, ts, *hooks), model="archs/gemma2")
    return model, seqs


def saelens_on_post_norm_sites(a, ref, model, seqs):
    """SAELens SAEs on hook_mlp_out / hook_attn_out of Gemma 2 blocks (after their post-norms)."""
    for name, cls, cfg_cls, hook, seed in (
            ("saelens-gemma2-mlp-out-1", JumpReLUSAE, JumpReLUSAEConfig, "blocks.1.hook_mlp_out", 6300),
            ("saelens-gemma2-attn-out-0", StandardSAE, StandardSAEConfig, "blocks.0.hook_attn_out", 6301)):
        layer = int(hook.split(".")[1])
        out_mod = output_point(model, layer, hook.split(".", 2)[2])
        _, y0, _ = run(model, seqs["seq33"], None, out_mod)
        scale = float(y0.norm(dim=-1).mean()) / 4
        cfg = cfg_cls(d_in=256, d_sae=D_SAE)
        cfg.metadata.hook_name = hook
        sae = cls(cfg)
        g = torch.Generator().manual_seed(seed + a.seed_offset)
        with torch.no_grad():
            w = torch.randn(D_SAE, 256, generator=g)
            w = w / w.norm(dim=-1, keepdim=True) * (0.5 + torch.rand(D_SAE, 1, generator=g))
            sae.W_dec.copy_(w)
            sae.W_enc.copy_(w.T / scale + 0.02 * torch.randn(256, D_SAE, generator=g) / scale)
            sae.b_enc.copy_(-0.3 - 0.2 * torch.rand(D_SAE, generator=g))
            sae.b_dec.copy_(0.05 * torch.randn(256, generator=g))
            if hasattr(sae, "threshold"):
                sae.threshold.copy_(0.05 + 0.25 * torch.rand(D_SAE, generator=g))
        sae.eval().save_model(os.path.join(OUT, name))
        per = {}
        for seq, ids in seqs.items():
            _, y, clean = run(model, ids, None, out_mod)
            clean = sum(clean)
            with torch.no_grad():
                f = sae.encode(y)
                recon = sae.decode(f)
                _, _, spliced = run(model, ids, None, out_mod, replace=lambda _x, yo: sae.decode(sae.encode(yo)))
                spliced = sum(spliced)
                j = int(f.mean(0).argmax())
                clamps = []
                for v in (0.0, 2.0 * float(f[:, j].max())):
                    def clamp(_x, yo, j=j, v=v):
                        return yo + (v - sae.encode(yo)[..., j:j + 1]) * sae.W_dec[j]
                    clamps.append({"feature": j, "value": v, "bits": sum(run(model, ids, None, out_mod, replace=clamp)[2])})
            per[seq] = dict(summarize(f, y, recon, clean, spliced, ids), clamps=clamps)
        print(hook, {s: (np.mean(v["l0"]), round(v["reconstruction"]["spliced_bits"] - v["reconstruction"]["clean_bits"], 3)) for s, v in per.items()})
        ref["saes"][name] = {"hook": hook, "model": "archs/gemma2", "sequences": per}


def site_run(model, ids, mod, pre, replace=None):
    """Runs ids reading (pre: the input of, else: the output of) module mod; returns (activation,
    per-token bits). With replace, the activation becomes replace(activation) on the way."""
    seen = {}
    if pre:
        def hook(m, args):
            seen["x"] = args[0].detach().clone()
            return None if replace is None else (replace(args[0]).to(args[0].dtype), *args[1:])
        h = mod.register_forward_pre_hook(hook)
    else:
        def hook(m, a, o):
            seen["x"] = o.detach().clone()
            return None if replace is None else replace(o).to(o.dtype)
        h = mod.register_forward_hook(hook)
    bits = bits_of(model, ids)
    h.remove()
    return seen["x"][0], bits


def gemma_2_loader(release, folder, d_in):
    """SAELens's own Gemma Scope 1 loader on a local folder (its Hub download pointed at it; d_in and
    d_sae given, as its config comes from the release's name)."""
    from sae_lens import SAE
    from sae_lens.loading import pretrained_sae_loaders as loaders
    root = os.path.join(OUT, release)
    loaders.hf_hub_download = lambda repo_id, filename=None, subfolder=None, **kw: os.path.join(root, subfolder or "", filename)
    cfg, state, _ = loaders.gemma_2_sae_huggingface_loader(
        f"google/{release}", folder, cfg_overrides={"d_in": d_in, "d_sae": D_SAE, "normalize_activations": "none"})
    sae = SAE.from_dict(cfg)
    sae.load_state_dict(state)
    return cfg, sae.eval()


def gemma_3_loader(root, folder):
    """SAELens's own Gemma Scope 2 loader on a local folder (its Hub downloads pointed at it)."""
    from safetensors import safe_open
    from sae_lens import SAE
    from sae_lens.loading import pretrained_sae_loaders as loaders

    def shapes(repo_id, filename):
        with safe_open(os.path.join(root, filename), "pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    loaders.hf_hub_download = lambda repo_id, filename=None, subfolder=None, **kw: os.path.join(root, subfolder or "", filename)
    loaders.get_safetensors_tensor_shapes = shapes
    cfg, state, _ = loaders.gemma_3_sae_huggingface_loader("google/gemma-scope-2-tiny-pt", folder)
    sae = SAE.from_dict(cfg)
    sae.load_state_dict(state)
    return cfg, sae.eval()


def random_params(d_in, d_out, seed, scale, skip=False):
    """JumpReLU weights as Gemma Scope names them (W_enc [d_in, d_sae], W_dec [d_sae, d_out])."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(D_SAE, d_out, generator=g)
    w = w / w.norm(dim=-1, keepdim=True) * (0.5 + torch.rand(D_SAE, 1, generator=g))
    enc = torch.randn(D_SAE, d_in, generator=g)
    enc = enc / enc.norm(dim=-1, keepdim=True) * (0.5 + torch.rand(D_SAE, 1, generator=g))
    p = {"W_enc": (enc.T / scale + 0.02 * torch.randn(d_in, D_SAE, generator=g) / scale).contiguous(),
         "W_dec": (0.3 * w if skip else w).contiguous(), "b_enc": -0.3 - 0.2 * torch.rand(D_SAE, generator=g),
         "b_dec": 0.05 * torch.randn(d_out, generator=g), "threshold": 0.05 + 0.25 * torch.rand(D_SAE, generator=g)}
    if skip:
        p["affine_skip_connection"] = 0.05 * torch.randn(d_in, d_out, generator=g)
    return p


def gemma_scope_folders(a, ref, model, seqs):
    """Gemma Scope 1's MLP and attention releases (params.npz) and Gemma Scope 2's mlp_out,
    attn_out and transcoder folders (params.safetensors + config.json), each read back through
    SAELens's own loader and measured on transformers' activations where SAELens's hooks are."""
    blk = model.model.layers
    z_dim = model.config.num_attention_heads * model.config.head_dim
    gs2 = "gemma-scope-2-tiny-pt"
    cases = [  # (name, layer, kind, d_in, seed)
        ("gemma-scope-2b-pt-mlp/layer_1/width_256/average_l0_20", 1, "mlp", 256, 6400),
        ("gemma-scope-2b-pt-att/layer_0/width_256/average_l0_20", 0, "att", z_dim, 6401),
        (f"{gs2}/mlp_out/layer_0_width_256_l0_small", 0, "mlp", 256, 6402),
        (f"{gs2}/attn_out/layer_1_width_256_l0_small", 1, "att", z_dim, 6403),
        (f"{gs2}/transcoder/layer_1_width_256_l0_small_affine", 1, "transcoder", 256, 6404)]
    for name, layer, kind, d_in, seed in cases:
        # Where SAELens's hooks read: hook_mlp_out = post_feedforward_layernorm's output,
        # attn.hook_z = o_proj's input, the transcoder's input = pre_feedforward_layernorm's output.
        point = {"mlp": (blk[layer].post_feedforward_layernorm, False),
                 "att": (blk[layer].self_attn.o_proj, True),
                 "transcoder": (blk[layer].mlp, True)}[kind]
        x0, _ = site_run(model, seqs["seq33"], *point)
        # An SAE writes back where it reads (hook_z: every head's output); a transcoder the MLP's.
        p = random_params(d_in, 256 if kind == "transcoder" else d_in, seed + a.seed_offset, float(x0.norm(dim=-1).mean()) / 4, kind == "transcoder")
        folder = os.path.join(OUT, name)
        os.makedirs(folder)
        if name.startswith(gs2):
            hf = {"mlp": f"model.layers.{layer}.post_feedforward_layernorm.output",
                  "att": f"model.layers.{layer}.self_attn.o_proj.input",
                  "transcoder": f"model.layers.{layer}.pre_feedforward_layernorm.output"}[kind]
            cfg = {"architecture": "jump_relu", "model_name": "gemma-3-tiny-pt", "hf_hook_point_in": hf}
            if kind == "transcoder":
                cfg.update(hf_hook_point_out=f"model.layers.{layer}.post_feedforward_layernorm.output",
                           affine_connection=True)
            with open(os.path.join(folder, "config.json"), "w") as fh:
                json.dump(cfg, fh)
            save_file({k.lower(): v.contiguous() for k, v in p.items()}, os.path.join(folder, "params.safetensors"))
            cfg, sae = gemma_3_loader(os.path.join(OUT, gs2), os.path.relpath(folder, os.path.join(OUT, gs2)))
        else:
            np.savez(os.path.join(folder, "params.npz"), **{k: v.numpy() for k, v in p.items()})
            release = name.split("/")[0]
            cfg, sae = gemma_2_loader(release, os.path.relpath(folder, os.path.join(OUT, release)), d_in)
        per = {}
        for seq, ids in seqs.items():
            with torch.no_grad():
                if kind == "transcoder":
                    out_mod = blk[layer].post_feedforward_layernorm
                    x, y, clean = run(model, ids, (blk[layer].mlp, "pre"), out_mod)
                    f, recon = sae.encode(x), sae(x)
                    spliced = run(model, ids, (blk[layer].mlp, "pre"), out_mod, replace=lambda xi, yo: sae(xi))[2]
                else:
                    y, clean = site_run(model, ids, *point)
                    f, recon = sae.encode(y), sae.decode(sae.encode(y))
                    spliced = site_run(model, ids, *point, replace=lambda v: sae.decode(sae.encode(v)))[1]
                j = int(f.mean(0).argmax())
                clamps = []
                for v in (0.0, 20.0 * float(f[:, j].max())):
                    if kind == "transcoder":
                        def clamp(xi, yo, j=j, v=v):
                            return yo + (v - sae.encode(xi)[..., j:j + 1]) * sae.W_dec[j]
                        tok = run(model, ids, (blk[layer].mlp, "pre"), out_mod, replace=clamp)[2]
                    else:
                        def clamp(yo, j=j, v=v):
                            return yo + (v - sae.encode(yo)[..., j:j + 1]) * sae.W_dec[j]
                        tok = site_run(model, ids, *point, replace=clamp)[1]
                    clamps.append({"feature": j, "value": v, "bits": sum(tok), "surprisal_bits": tok})
            per[seq] = dict(summarize(f, y, recon, sum(clean), sum(spliced), ids), clamps=clamps)
        print(name, cfg["hook_name"], {s: (np.mean(v["l0"]), round(v["reconstruction"]["spliced_bits"] - v["reconstruction"]["clean_bits"], 3)) for s, v in per.items()})
        ref["saes"][name] = {"hook": cfg["hook_name"], "hook_out": cfg.get("hook_name_out"),
                             "architecture": cfg["architecture"], "model": "archs/gemma2", "sequences": per}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed-offset", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(2)
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    ref = {"meta": {"torch": torch.__version__, "transformers": transformers.__version__,
                    "sae_lens": __import__("sae_lens").__version__, "circuit_tracer": "0.5.0"},
           "sets": {}, "saes": {}}
    circuit_tracer_qwen3(a, ref)
    model, seqs = gemma_scope_sets(a, ref)
    saelens_on_post_norm_sites(a, ref, model, seqs)
    gemma_scope_folders(a, ref, model, seqs)
    with open(os.path.join(OUT, "reference.json"), "w") as fh:
        json.dump(ref, fh)


if __name__ == "__main__":
    main()
