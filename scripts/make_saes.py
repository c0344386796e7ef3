#!/usr/bin/env python3
"""Tiny random SAEs in SAELens's own format for the tiny Qwen3 fixture, with SAELens's numbers.

For each SAE it writes tests/fixtures/saes/<name>/:
  cfg.json, sae_weights.safetensors    SAELens's `save_model` (StandardSAE, JumpReLUSAE, TopKSAE)
and, in Gemma Scope 2's layout, gemma-scope-2/resid_post/layer_1_width_512_l0_small/ (params.safetensors
with lowercase w_enc/w_dec/b_enc/b_dec/threshold, config.json), whose numbers come from the SAE that
SAELens's own Gemma Scope 2 loader (`gemma_3_sae_huggingface_loader`, its Hub downloads pointed at the
local files) makes of it (JumpReLU, b_dec not subtracted from the input); and in Gemma Scope 1's,
gemma-scope-2b-pt-res/layer_0/width_512/average_l0_20/params.npz (np.savez), through SAELens's
`gemma_2_sae_huggingface_loader` the same way; and in Llama Scope's, llama-scope/Llama3_1-8B-Base-L1R-8x/
(hyperparams.json, checkpoints/final.safetensors), through SAELens's `llama_scope_sae_huggingface_loader`
and the dataset-wise norm folded in as SAE.from_pretrained does; and in sparsify's, sparsify/layers.1/ (with
a skip connection) and sparsify/layers.0.mlp/ (cfg.json + sae.safetensors), written and read by sparsify's
own save_to_disk / load_from_disk (SAELens's sparsify loader transposes W_dec, so it is not the reference),
and a sparsify transcoder, sparsify-transcoder/layers.1.mlp/ (the MLP's normed input to its output, with a
skip connection; its numbers under "transcoders": features, L0, reconstruction of the MLP's output, the
spliced-in surprisal),
and tests/fixtures/saes/reference.json with, per SAE and per sequence of the model's reference:
  features[t] = the top 8 feature activations of token t, [[id, act], ...] by activation (SAELens's
                `sae.encode` on transformers' activation at the SAE's hook, float32)
  l0[t]        the number of active features
  interventions  the feature most active on the sequence steered (x + 8 W_dec[j] at every position),
               clamped to 4x its largest activation at positions 1 and 2, and ablated at the position
               where it is largest, the error term kept: total and per-token surprisal (what an interventions
               file with site "feature" asks for)
  generation   8 greedy new tokens (transformers' generate) with that feature steered by 8 W_dec[j]
               at every position
  card         that feature's activation per token, its logit effect (the 10 tokens W_dec[j] . W_U
               raises most and the 10 it lowers most, no final norm; for hook_z, W_O W_dec[j] . W_U) and its 10 nearest features by
               decoder cosine
  clamps       the total surprisal with the feature most active on the sequence clamped to 0 and to twice its
               largest activation at every position, the SAE's error term kept (x + (v - f_j) W_dec[j])
  reconstruction = {mse (per-token squared error summed over dims, mean over tokens, as SAELens's
                evals), explained_variance (SAELens's ExplainedVarianceCalculator), clean_bits (total
                surprisal of the predicted tokens), spliced_bits (the same with the activation replaced
                by `sae.decode(sae.encode(x))` at every position, by a transformers forward hook)}
Hooks map onto transformers' modules as SAELens's HookedTransformer names them for a Llama-shaped
block: blocks.L.hook_resid_pre = the input of decoder layer L, hook_resid_post = its output,
hook_mlp_out = the output of layer L's MLP, attn.hook_z = the input of layer L's o_proj (every head's
output, flattened).

Weights: W_dec rows random unit vectors times 0.5..1.5, W_enc = W_dec^T / |x| scale plus noise, b_enc
negative so that few features fire, b_dec small, the JumpReLU threshold 0.05..0.3.

Pinned: Python 3.11, torch 2.15.0 (CPU), transformers 5.25.0, sae-lens 6.54.12, eai-sparsify 1.3.3
(with natsort 8.4.0, simple_parsing 0.1.9, einops 0.8.2, schedulefree 1.4.1 for its imports).

  HF_HUB_OFFLINE=1 python scripts/make_saes.py [--seed-offset N]
"""
import argparse
import json
import os
import shutil

import numpy as np
import torch
import transformers
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.evals import ExplainedVarianceCalculator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "tests", "fixtures", "archs", "qwen3")
OUT = os.path.join(ROOT, "tests", "fixtures", "saes")
D_SAE = 512

SAES = {
    "relu-resid-pre-1": (StandardSAE, StandardSAEConfig, {}, "blocks.1.hook_resid_pre", 5001),
    "jumprelu-resid-post-0": (JumpReLUSAE, JumpReLUSAEConfig, {}, "blocks.0.hook_resid_post", 5002),
    "topk-mlp-out-1": (TopKSAE, TopKSAEConfig, {"k": 16}, "blocks.1.hook_mlp_out", 5003),
    # The heads' outputs before o_proj, flattened (4 heads x 128): SAELens's hook_z SAEs.
    "relu-hook-z-1": (StandardSAE, StandardSAEConfig, {}, "blocks.1.attn.hook_z", 5010),
}


def module_of(model, hook):
    """(module, whether the hook is its input) for a SAELens hook name."""
    _, layer, what = hook.split(".", 2)
    layer = model.model.layers[int(layer)]
    return {"hook_resid_pre": (layer, True), "hook_resid_post": (layer, False),
            "hook_mlp_out": (layer.mlp, False), "attn.hook_z": (layer.self_attn.o_proj, True)}[what]


def capture(model, hook, ids, replace=None, per_token=False):
    """The activation at `hook` for ids, and the total surprisal of the predicted tokens (with
    per_token, also each one's); with `replace`, the activation is replaced by replace(activation)
    on the way."""
    mod, is_input = module_of(model, hook)
    seen = {}

    def pre(m, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        seen["x"] = x.detach().clone()
        if replace is None:
            return None
        y = replace(x)
        if args:
            return (y, *args[1:]), kwargs
        kwargs = dict(kwargs, hidden_states=y)
        return args, kwargs

    def post(m, args, out):
        x = out[0] if isinstance(out, tuple) else out
        seen["x"] = x.detach().clone()
        if replace is None:
            return None
        y = replace(x)
        return (y, *out[1:]) if isinstance(out, tuple) else y

    h = mod.register_forward_pre_hook(pre, with_kwargs=True) if is_input else mod.register_forward_hook(post)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    h.remove()
    each = [float(-logp[i - 1, ids[i]] / np.log(2)) for i in range(1, len(ids))]
    if per_token:
        return seen["x"][0], sum(each), each
    return seen["x"][0], sum(each)


def make_sae(cls, cfg_cls, extra, hook, seed, scale, d_in=256):
    cfg = cfg_cls(d_in=d_in, d_sae=D_SAE, **extra)
    cfg.metadata.hook_name = hook
    sae = cls(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = torch.randn(D_SAE, d_in, generator=g)
        w = w / w.norm(dim=-1, keepdim=True) * (0.5 + torch.rand(D_SAE, 1, generator=g))
        sae.W_dec.copy_(w)
        sae.W_enc.copy_(w.T / scale + 0.02 * torch.randn(d_in, D_SAE, generator=g) / scale)
        sae.b_enc.copy_(-0.3 - 0.2 * torch.rand(D_SAE, generator=g))
        sae.b_dec.copy_(0.05 * torch.randn(d_in, generator=g))
        if hasattr(sae, "threshold"):
            sae.threshold.copy_(0.05 + 0.25 * torch.rand(D_SAE, generator=g))
    return sae.eval()


def measure(model, sae, hook, seqs):
    """SAELens's numbers for one SAE on every sequence (see the module's docstring)."""
    per = {}
    for seq, ids in seqs.items():
        x, clean = capture(model, hook, ids)
        rec = getattr(sae, "reconstruct", None) or (lambda y: sae.decode(sae.encode(y)))
        with torch.no_grad():
            f = sae.encode(x)
            recon = rec(x)
            _, spliced = capture(model, hook, ids, replace=lambda y: rec(y).to(y.dtype))
        top = torch.topk(f, 8, dim=-1)
        ev = ExplainedVarianceCalculator()
        ev.add_batch(sae_output=recon, hidden_acts=x)
        # Ablate (0) and clamp (twice its largest activation) the feature most active on this
        # sequence, keeping the SAE's error term: x + (v - f_j(x)) W_dec[j] at every position.
        clamp_feature = int(f.mean(0).argmax())
        top_act = float(f[:, clamp_feature].max())
        clamps = []
        for value in (0.0, 2.0 * top_act):
            def steer(y, j=clamp_feature, v=value):
                fj = sae.encode(y)[..., j:j + 1]
                return y + (v - fj) * sae.W_dec[j]
            _, bits = capture(model, hook, ids, replace=steer)
            clamps.append({"feature": clamp_feature, "value": value, "bits": bits})
        # Feature interventions as an interventions file gives them: steer (x + 8 W_dec[j]) at
        # every position, clamp to 4x its largest activation at two positions, ablate it where it
        # is largest (among the positions that predict a token).
        interventions = []
        n = len(ids)
        peak = int(f[:n - 1, clamp_feature].argmax())
        for what, positions, amount in (("steer", "all", 8.0), ("clamp", [1, 2], 4.0 * top_act),
                                        ("ablate", [peak], 0.0)):
            def edit(y, j=clamp_feature, what=what, positions=positions, v=amount):
                mask = torch.zeros(y.shape[-2], 1, dtype=y.dtype)
                mask[list(range(y.shape[-2])) if positions == "all" else positions] = 1.0
                if what == "steer":
                    return y + mask * v * sae.W_dec[j]
                fj = sae.encode(y)[..., j:j + 1]
                return y + mask * (v - fj) * sae.W_dec[j]
            _, bits, per_token = capture(model, hook, ids, replace=edit, per_token=True)
            interventions.append({"what": what, "feature": clamp_feature, "positions": positions,
                                  "amount": amount, "bits": bits, "surprisal_bits": per_token})
        # Greedy generation (8 new tokens, transformers' KV cache) with the feature steered at
        # every position, the prompt's and each new token's.
        mod, is_input = module_of(model, hook)
        j = clamp_feature

        def steer_all(y, j=j):
            return y + 8.0 * sae.W_dec[j]

        def pre_hook(m, args, kwargs):
            if args:
                return (steer_all(args[0]), *args[1:]), kwargs
            return args, dict(kwargs, hidden_states=steer_all(kwargs["hidden_states"]))

        def post_hook(m, args, out):
            return (steer_all(out[0]), *out[1:]) if isinstance(out, tuple) else steer_all(out)

        h = mod.register_forward_pre_hook(pre_hook, with_kwargs=True) if is_input else mod.register_forward_hook(post_hook)
        with torch.no_grad():
            gen = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
        h.remove()
        generation = {"what": "steer", "feature": j, "positions": "all", "amount": 8.0,
                      "new_ids": gen[0, len(ids):].tolist()}
        # The feature's card: its logit effect W_dec[j] . W_U (no final norm) and its nearest
        # features by decoder cosine, 10 each.
        with torch.no_grad():
            direction = sae.W_dec[j].double()
            if hook.endswith("attn.hook_z"):
                # A direction in the heads' outputs reaches the residual stream through o_proj.
                direction = model.model.layers[int(hook.split(".")[1])].self_attn.o_proj.weight.double() @ direction
            effect = direction @ model.lm_head.weight.double().T
            up = torch.topk(effect, 10)
            down = torch.topk(-effect, 10)
            wd = sae.W_dec.double()
            cos = (wd @ wd[j]) / (wd.norm(dim=-1) * wd[j].norm())
            cos[j] = -2.0
            near = torch.topk(cos, 10)
        card = {"feature": j,
                "acts": [float(f"{v:.7g}") for v in f[:, j].tolist()],
                "logits_up": [[int(i), float(v)] for i, v in zip(up.indices.tolist(), up.values.tolist())],
                "logits_down": [[int(i), -float(v)] for i, v in zip(down.indices.tolist(), down.values.tolist())],
                "neighbours": [[int(i), float(v)] for i, v in zip(near.indices.tolist(), near.values.tolist())]}
        per[seq] = {
            "card": card,
            "generation": generation,
            "interventions": interventions,
            "clamps": clamps,
            "input_ids": ids,
            "features": [[[int(i), float(f"{v:.7g}")] for i, v in zip(ti, tv) if v != 0]
                         for ti, tv in zip(top.indices.tolist(), top.values.tolist())],
            "l0": [int(n) for n in (f != 0).sum(-1)],
            "reconstruction": {
                "mse": float((x - recon).pow(2).sum(-1).mean()),
                "explained_variance": float(ev.compute()),
                "clean_bits": clean,
                "spliced_bits": spliced,
            },
        }
    print(hook, {s: (np.mean(v["l0"]), round(v["reconstruction"]["spliced_bits"] - v["reconstruction"]["clean_bits"], 3)) for s, v in per.items()})
    return {"hook": hook, "architecture": sae.cfg.architecture(), "sequences": per}


# (folder under tests/fixtures/saes, hook): Gemma Scope 2's `<site>/layer_<L>_width_<W>_l0_<size>`.
GEMMA_SCOPE_2 = ("gemma-scope-2/resid_post/layer_1_width_512_l0_small", "blocks.1.hook_resid_post")


# Gemma Scope 1's `<release>/layer_<L>/width_<W>/average_l0_<N>` with its params.npz.
GEMMA_SCOPE_1 = ("gemma-scope-2b-pt-res/layer_0/width_512/average_l0_20", "blocks.0.hook_resid_post")


def write_gemma_scope_1(sae, folder):
    """A JumpReLU SAE as Gemma Scope 1 ships it: np.savez of W_enc, W_dec, b_enc, b_dec, threshold."""
    os.makedirs(folder, exist_ok=True)
    with torch.no_grad():
        np.savez(os.path.join(folder, "params.npz"), W_enc=sae.W_enc.numpy(), W_dec=sae.W_dec.numpy(),
                 b_enc=sae.b_enc.numpy(), b_dec=sae.b_dec.numpy(), threshold=sae.threshold.numpy())


def load_gemma_scope_1(folder):
    """SAELens's own Gemma Scope loader (`gemma_2_sae_huggingface_loader`) on the local folder; its
    d_in and d_sae come from the release's name on the Hub, so they are given for this tiny one, and
    its normalize_activations None (which SAELens's SAE class refuses) is given as "none", the same."""
    from sae_lens import SAE
    from sae_lens.loading import pretrained_sae_loaders as loaders
    release = os.path.join(OUT, GEMMA_SCOPE_1[0].split("/")[0])
    sub = os.path.relpath(folder, release)

    def download(repo_id, filename=None, subfolder=None, **kw):
        return os.path.join(release, subfolder or "", filename)

    loaders.hf_hub_download = download
    cfg, state, _ = loaders.gemma_2_sae_huggingface_loader(
        "google/gemma-scope-2b-pt-res", sub,
        cfg_overrides={"d_in": 256, "d_sae": D_SAE, "normalize_activations": "none"})
    assert cfg["hook_name"] == GEMMA_SCOPE_1[1] and not cfg["apply_b_dec_to_input"], cfg
    sae = SAE.from_dict(cfg)
    sae.load_state_dict(state)
    return sae.eval()


def write_gemma_scope_2(sae, folder):
    """A JumpReLU SAE in Gemma Scope 2's files: params.safetensors (w_enc [d_in, d_sae], w_dec,
    b_enc, b_dec, threshold) and config.json (architecture jump_relu, the HF hook point)."""
    from safetensors.torch import save_file
    os.makedirs(folder, exist_ok=True)
    with torch.no_grad():
        save_file({"w_enc": sae.W_enc.contiguous(), "w_dec": sae.W_dec.contiguous(), "b_enc": sae.b_enc.contiguous(),
                   "b_dec": sae.b_dec.contiguous(), "threshold": sae.threshold.contiguous()},
                  os.path.join(folder, "params.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"architecture": "jump_relu", "model_name": "gemma-3-tiny-test",
                   "hf_hook_point_in": "model.layers.1.output"}, f)


def load_gemma_scope_2(folder):
    """SAELens's own Gemma Scope 2 loader on the local folder (its Hub downloads pointed at it)."""
    from safetensors import safe_open
    from sae_lens import SAE
    from sae_lens.loading import pretrained_sae_loaders as loaders
    root = os.path.dirname(os.path.dirname(folder))
    sub = os.path.relpath(folder, root)

    def download(repo_id, filename=None, subfolder=None, **kw):
        return os.path.join(root, subfolder or "", filename)

    def shapes(repo_id, filename):
        with safe_open(os.path.join(root, filename), "pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}

    loaders.hf_hub_download, loaders.get_safetensors_tensor_shapes = download, shapes
    cfg, state, _ = loaders.gemma_3_sae_huggingface_loader("google/gemma-scope-2-test", sub)
    assert cfg["hook_name"] == GEMMA_SCOPE_2[1] and not cfg["apply_b_dec_to_input"], cfg
    sae = SAE.from_dict(cfg)
    sae.load_state_dict(state)
    return sae.eval()


# EleutherAI sparsify's `<run>/<hookpoint>/` (cfg.json + sae.safetensors): (folder, hook, skip connection).
SPARSIFY = [("sparsify/layers.1", "blocks.1.hook_resid_post", True),
            ("sparsify/layers.0.mlp", "blocks.0.hook_mlp_out", False)]


class SparsifyReference:
    """sparsify's own SparseCoder (as `SparseCoder.load_from_disk` reads it) seen as SAELens's SAE
    is by `measure`: dense feature activations from its top-k, W_dec [latents, d_in], and its
    reconstruction with the skip connection."""

    def __init__(self, sc):
        self.sc = sc
        self.W_dec = sc.W_dec
        k = sc.cfg.k
        self.cfg = type("Cfg", (), {"architecture": staticmethod(lambda: "topk"), "k": k})()

    def encode(self, x):
        out = self.sc.encode(x)
        f = torch.zeros(*out.top_indices.shape[:-1], self.sc.num_latents, dtype=out.top_acts.dtype)
        return f.scatter(-1, out.top_indices, out.top_acts)

    def decode(self, f):
        return f @ self.sc.W_dec + self.sc.b_dec

    def reconstruct(self, x):
        y = self.decode(self.encode(x))
        if self.sc.W_skip is not None:
            y = y + x @ self.sc.W_skip.mT
        return y


def make_sparsify(folder, skip, seed, scale, transcode=False):
    """A random TopK SAE (or transcoder) saved by sparsify's own `save_to_disk`, read back by
    `load_from_disk`."""
    from sparsify.config import SparseCoderConfig
    from sparsify.sparse_coder import SparseCoder
    sc = SparseCoder(256, SparseCoderConfig(num_latents=D_SAE, k=24, skip_connection=skip, transcode=transcode))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = torch.randn(D_SAE, 256, generator=g)
        w = w / w.norm(dim=-1, keepdim=True) * (0.5 + torch.rand(D_SAE, 1, generator=g))
        sc.W_dec.copy_(w)
        sc.encoder.weight.copy_(w / scale + 0.02 * torch.randn(D_SAE, 256, generator=g) / scale)
        sc.encoder.bias.copy_(-0.3 - 0.2 * torch.rand(D_SAE, generator=g))
        sc.b_dec.copy_(0.05 * torch.randn(256, generator=g))
        if skip:
            sc.W_skip.copy_(0.05 * torch.randn(256, 256, generator=g) / 16.0)
    sc.save_to_disk(folder)
    return SparsifyReference(SparseCoder.load_from_disk(folder).eval())


# sparsify transcoders (`transcode`): the MLP's input (after its norm) to the MLP's output.
SPARSIFY_TRANSCODERS = [("sparsify-transcoder/layers.1.mlp", 1, True)]


def measure_transcoder(model, tc, layer, seqs):
    """sparsify's own numbers for a transcoder on every sequence: features of the MLP's input (its
    norm applied, as the MLP module receives it), the reconstruction of the MLP's output, and the
    total surprisal with the MLP's output replaced by the transcoder's."""
    mlp = model.model.layers[layer].mlp
    per = {}
    for seq, ids in seqs.items():
        seen = {}

        def keep(m, args, out):
            seen["in"], seen["out"] = args[0].detach().clone()[0], out.detach().clone()[0]

        h = mlp.register_forward_hook(keep)
        _, clean = capture(model, f"blocks.{layer}.hook_resid_post", ids)
        h.remove()
        x, y = seen["in"], seen["out"]
        with torch.no_grad():
            f = tc.encode(x)
            recon = tc.reconstruct(x)
        h = mlp.register_forward_hook(lambda m, args, out: tc.reconstruct(args[0]).to(out.dtype))
        _, spliced = capture(model, f"blocks.{layer}.hook_resid_post", ids)
        h.remove()
        top = torch.topk(f, 8, dim=-1)
        ev = ExplainedVarianceCalculator()
        ev.add_batch(sae_output=recon, hidden_acts=y)
        per[seq] = {
            "input_ids": ids,
            "features": [[[int(i), float(f"{v:.7g}")] for i, v in zip(ti, tv) if v != 0]
                         for ti, tv in zip(top.indices.tolist(), top.values.tolist())],
            "l0": [int(n) for n in (f != 0).sum(-1)],
            "reconstruction": {"mse": float((y - recon).pow(2).sum(-1).mean()),
                               "explained_variance": float(ev.compute()),
                               "clean_bits": clean, "spliced_bits": spliced},
        }
    print("transcoder", layer, {s: (np.mean(v["l0"]), round(v["reconstruction"]["spliced_bits"] - v["reconstruction"]["clean_bits"], 3)) for s, v in per.items()})
    return {"hook": f"layers.{layer}.mlp", "architecture": "topk", "sequences": per}


# Llama Scope's `<repo>/<Llama3_1-8B-Base-L<L>R-8x>/` with hyperparams.json and checkpoints/final.safetensors.
LLAMA_SCOPE = ("llama-scope/Llama3_1-8B-Base-L1R-8x", "blocks.1.hook_resid_post")


def write_llama_scope(sae, folder, hook, norm_in, threshold):
    """A JumpReLU SAE trained on inputs scaled to norm sqrt(d) (x * sqrt(d) / norm_in), in Llama
    Scope's files: checkpoints/final.safetensors (encoder.weight [d_sae, d_in], encoder.bias,
    decoder.weight [d_in, d_sae], decoder.bias) and hyperparams.json."""
    from safetensors.torch import save_file
    os.makedirs(os.path.join(folder, "checkpoints"), exist_ok=True)
    with torch.no_grad():
        save_file({"encoder.weight": sae.W_enc.T.contiguous(), "encoder.bias": sae.b_enc.contiguous(),
                   "decoder.weight": sae.W_dec.T.contiguous(), "decoder.bias": sae.b_dec.contiguous()},
                  os.path.join(folder, "checkpoints", "final.safetensors"))
    with open(os.path.join(folder, "hyperparams.json"), "w") as f:
        json.dump({"d_model": 256, "d_sae": D_SAE, "hook_point_in": hook, "hook_point_out": hook,
                   "act_fn": "jumprelu", "jump_relu_threshold": threshold, "norm_activation": "dataset-wise",
                   "dataset_average_activation_norm": {"in": norm_in, "out": norm_in}}, f)


def load_llama_scope(folder):
    """SAELens's own Llama Scope loader on the local folder (its Hub downloads pointed at it), then
    the dataset-wise norm folded in as SAE.from_pretrained does (norm_scaling_factor = sqrt(d_model)
    / dataset_average_activation_norm.in, the factor its loader scales the threshold by)."""
    from sae_lens import SAE
    from sae_lens.loading import pretrained_sae_loaders as loaders
    root = os.path.dirname(folder)
    sub = os.path.basename(folder)

    def download(repo_id, filename=None, subfolder=None, **kw):
        return os.path.join(root, subfolder or "", filename)

    loaders.hf_hub_download = download
    cfg, state, _ = loaders.llama_scope_sae_huggingface_loader(
        "fnlp/Llama3_1-8B-Base-LXR-8x-test", sub, cfg_overrides={"dtype": "float32", "device": "cpu"})
    assert cfg["hook_name"] == LLAMA_SCOPE[1] and cfg["normalize_activations"] == "expected_average_only_in", cfg
    sae = SAE.from_dict(cfg)
    sae.load_state_dict(state)
    hp = json.load(open(os.path.join(folder, "hyperparams.json")))
    sae.fold_activation_norm_scaling_factor(hp["d_model"] ** 0.5 / hp["dataset_average_activation_norm"]["in"])
    return sae.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed-offset", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(2)
    model = transformers.AutoModelForCausalLM.from_pretrained(MODEL, attn_implementation="eager", dtype=torch.float32).eval()
    seqs = {n: s["input_ids"] for n, s in json.load(open(os.path.join(MODEL, "reference.json")))["sequences"].items()}
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    ref = {"meta": {"sae_lens": __import__("sae_lens").__version__, "transformers": transformers.__version__,
                    "torch": torch.__version__, "model": "tests/fixtures/archs/qwen3"}, "saes": {}}
    for name, (cls, cfg_cls, extra, hook, seed) in SAES.items():
        seed += a.seed_offset
        # Scale the encoder to the activations' size so that some features fire.
        x0, _ = capture(model, hook, seqs["seq33"])
        scale = float(x0.norm(dim=-1).mean())
        sae = make_sae(cls, cfg_cls, extra, hook, seed, scale / 4, d_in=x0.shape[-1])
        sae.save_model(os.path.join(OUT, name))
        ref["saes"][name] = measure(model, sae, hook, seqs)
    # Gemma Scope 2's layout, read back through SAELens's own Gemma Scope 2 loader.
    hook = GEMMA_SCOPE_2[1]
    x0, _ = capture(model, hook, seqs["seq33"])
    sae = make_sae(JumpReLUSAE, JumpReLUSAEConfig, {}, hook, 5004 + a.seed_offset,
                   float(x0.norm(dim=-1).mean()) / 4)
    name = GEMMA_SCOPE_2[0]
    write_gemma_scope_2(sae, os.path.join(OUT, name))
    ref["saes"][name] = measure(model, load_gemma_scope_2(os.path.join(OUT, name)), hook, seqs)
    # Gemma Scope 1's layout (params.npz), read back through SAELens's own Gemma Scope loader.
    name, hook = GEMMA_SCOPE_1
    x0, _ = capture(model, hook, seqs["seq33"])
    sae = make_sae(JumpReLUSAE, JumpReLUSAEConfig, {}, hook, 5005 + a.seed_offset,
                   float(x0.norm(dim=-1).mean()) / 4)
    write_gemma_scope_1(sae, os.path.join(OUT, name))
    ref["saes"][name] = measure(model, load_gemma_scope_1(os.path.join(OUT, name)), hook, seqs)
    # Llama Scope's layout, read back through SAELens's own Llama Scope loader.
    name, hook = LLAMA_SCOPE
    x0, _ = capture(model, hook, seqs["seq33"])
    norm_in = float(x0.norm(dim=-1).mean())
    # Trained on inputs of norm sqrt(d) = 16: the encoder scaled to that.
    sae = make_sae(JumpReLUSAE, JumpReLUSAEConfig, {}, hook, 5006 + a.seed_offset, 16.0 / 4)
    write_llama_scope(sae, os.path.join(OUT, name), hook, norm_in, 0.15)
    ref["saes"][name] = measure(model, load_llama_scope(os.path.join(OUT, name)), hook, seqs)
    # sparsify's layout, read back through sparsify's own loader (eai-sparsify).
    for i, (name, hook, skip) in enumerate(SPARSIFY):
        x0, _ = capture(model, hook, seqs["seq33"])
        sae = make_sparsify(os.path.join(OUT, name), skip, 5007 + i + a.seed_offset,
                            float(x0.norm(dim=-1).mean()) / 4)
        r = measure(model, sae, hook, seqs)
        r["hook"] = os.path.basename(name)
        ref["saes"][name] = r
    # sparsify transcoders, read back through sparsify's own loader.
    ref["transcoders"] = {}
    for i, (name, layer, skip) in enumerate(SPARSIFY_TRANSCODERS):
        seen = {}
        h = model.model.layers[layer].mlp.register_forward_hook(lambda m, a, o: seen.update(x=a[0][0]))
        capture(model, f"blocks.{layer}.hook_resid_post", seqs["seq33"])
        h.remove()
        tc = make_sparsify(os.path.join(OUT, name), skip, 5020 + i + a.seed_offset,
                           float(seen["x"].norm(dim=-1).mean()) / 4, transcode=True)
        ref["transcoders"][name] = measure_transcoder(model, tc, layer, seqs)
    with open(os.path.join(OUT, "reference.json"), "w") as fh:
        json.dump(ref, fh)


if __name__ == "__main__":
    main()
