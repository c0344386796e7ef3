//! The forward pass, written once. A backend supplies the ops ([`super::exec::Exec`]); this file
//! decides what runs in which order for every block shape ([`crate::arch::Block`]), what is
//! captured, how a KV cache grows, and how a run starting at a layer skips the layers below it.
//! Interventions apply through [`super::edits`].

use super::edits::{Edits, FeatureInputs};
use super::exec::{
    AttnShape, DeltaBufs, DeltaState, Exec, ExpertScratch, KvCache, LinearIn, MlpId, NormSel,
    Readback, Table,
};
use crate::arch::{
    ArchSpec, KvSource, LayerRope, Mixer, MlpKind, Positions, QkNorm, SublayerNorms,
};
use crate::backend::{Input, LogitRows, Request, Routing, RunOutput, Sites};
use crate::error::{PrismError, Result};
use crate::intervene::{FeatureSource, Site};
use crate::weights::{LinearId, NormId};

/// Runs `req` on `e`, continuing `cache` when there is one.
pub fn run<E: Exec>(
    e: &mut E,
    req: &Request<'_>,
    mut cache: Option<&mut KvCache<E::Buf>>,
) -> Result<RunOutput> {
    let s = e.spec().clone();
    let (b, t, h) = (req.batch, req.seq, s.hidden);
    let rows = b * t;
    let past = check(&s, req, cache.as_deref())?;
    let start = match req.input {
        Input::Ids(_) => 0,
        Input::Residual { layer, .. } => layer,
    };
    let n = s.n_layers;
    let edits = Edits { req, past };
    let cap = req.capture;
    let positions: Vec<u32> = (0..rows).map(|r| (past + r % t) as u32).collect();

    // Embeddings, or the residual stream handed in.
    let mut ple = None;
    let mut x = match req.input {
        Input::Ids(ids) => {
            let x = e.alloc(rows * h, "residual")?;
            e.embed(ids, &x)?;
            if let Some(sc) = s.embed_scale {
                e.scale(&x, rows * h, sc)?;
            }
            if let Some(p) = s.per_layer_input {
                // The per-layer inputs read the scaled embedding at every layer.
                let emb = e.alloc(rows * h, "embedding (per-layer inputs)")?;
                e.copy(&x, 0, &emb, 0, rows * h)?;
                ple = Some(PleBufs {
                    emb,
                    a: e.alloc(rows * p, "per-layer input")?,
                    b: e.alloc(rows * p, "per-layer input gate")?,
                    out: e.alloc(rows * h, "per-layer input output")?,
                });
            }
            match s.positions {
                Positions::Learned => e.add_table_rows(Table::Positions, &positions, &x)?,
                Positions::LearnedWithTokenType => {
                    e.add_table_rows(Table::Positions, &positions, &x)?;
                    e.add_table_rows(Table::TokenType, &vec![0; rows], &x)?;
                }
                Positions::Rope => {}
            }
            x
        }
        Input::Residual { data, .. } => e.upload(data, "residual")?,
    };
    let sized = |on: bool, len: usize| if on { len } else { 1 };
    let (attn_post, mlp_post) = (s.block.attn.output, s.block.mlp.output);
    let qk_norm = s.qk_norm != QkNorm::None;
    let (qd, kvd) = (s.max_q_dim(), s.max_kv_dim());
    let intermediate = (0..n)
        .map(|l| s.mlp_width_at(l))
        .fold(s.intermediate, usize::max);
    // The dense MLP's scratch only where some layer has one (not in an all-experts model).
    let beside = s.experts.is_some_and(|x| x.beside_dense);
    let dense = beside || s.layers.iter().any(|k| k.mlp == MlpKind::Dense);
    let mut sc = Scratch {
        normed: e.alloc(rows * h, "normed")?,
        normed2: e.alloc(sized(s.block.parallel, rows * h), "normed 2")?,
        q: e.alloc(rows * qd, "q")?,
        k: e.alloc(rows * kvd, "k")?,
        v: e.alloc(rows * kvd, "v")?,
        qn: e.alloc(sized(qk_norm, rows * qd), "q normed")?,
        kn: e.alloc(sized(qk_norm, rows * kvd), "k normed")?,
        vn: e.alloc(sized(s.v_norm, rows * kvd), "v normed")?,
        z: e.alloc(rows * qd, "attention values")?,
        attn: e.alloc(rows * h, "attention output")?,
        attn2: e.alloc(sized(attn_post, rows * h), "attention output normed")?,
        gate: e.alloc(
            sized(s.activation.is_gated() && dense, rows * intermediate),
            "mlp gate",
        )?,
        up: e.alloc(sized(dense, rows * intermediate), "mlp up")?,
        mlp: e.alloc(rows * h, "mlp output")?,
        mlp2: e.alloc(sized(mlp_post, rows * h), "mlp output normed")?,
        lens: e.alloc(
            sized(cap.logit_lens && s.causal, rows * h),
            "logit lens input",
        )?,
        probs: if cap.attention {
            Some(e.alloc(b * s.n_heads * t * (past + t), "attention probabilities")?)
        } else {
            None
        },
        attn_gate: e.alloc(sized(s.attn_gate, rows * qd), "attention gate")?,
        // Keys and values a later layer shares, kept when no session's cache holds them.
        kept: (0..n)
            .map(|l| {
                let shared = s.layers.iter().any(|k| k.kv == KvSource::Shared(l));
                if !shared || cache.is_some() {
                    return Ok(None);
                }
                let len = rows * s.kv_dim_at(l);
                Ok(Some((
                    e.alloc(len, "shared keys")?,
                    e.alloc(len, "shared values")?,
                )))
            })
            .collect::<Result<Vec<_>>>()?,
        ple,
        delta: match s.delta_net {
            Some(d) if s.layers.iter().any(|k| k.mixer == Mixer::DeltaNet) => Some(DeltaScratch {
                bufs: DeltaBufs {
                    qkv: e.alloc(rows * d.conv_dim(), "linear attention qkv")?,
                    conv: e.alloc(rows * d.conv_dim(), "linear attention conv")?,
                    z: e.alloc(rows * d.value_dim(), "linear attention gate")?,
                    b: e.alloc(rows * d.v_heads, "linear attention beta")?,
                    a: e.alloc(rows * d.v_heads, "linear attention decay")?,
                    core: e.alloc(rows * d.value_dim(), "linear attention output")?,
                },
                mixing: if cap.attention && past == 0 {
                    Some(e.alloc(b * d.v_heads * t * t, "linear attention mixing")?)
                } else {
                    None
                },
            }),
            _ => None,
        },
        experts: match s.experts {
            Some(x) if s.layers.iter().any(|k| k.mlp == MlpKind::Experts) => Some(ExpertBufs {
                probs: e.alloc(rows * x.count, "router probabilities")?,
                weights: e.alloc(rows * x.count, "routing weights")?,
                scratch: ExpertScratch {
                    gate: e.alloc(rows * x.width, "expert gate")?,
                    up: e.alloc(rows * x.width, "expert up")?,
                    out: e.alloc(rows * h, "expert output")?,
                },
                beside: if x.beside_dense {
                    Some(BesideBufs {
                        dense: e.alloc(rows * h, "dense MLP output normed")?,
                        input: e.alloc(rows * h, "router and experts input")?,
                        experts: e.alloc(rows * h, "experts output")?,
                    })
                } else {
                    None
                },
                shared: match x.shared {
                    Some(w) => Some(SharedBufs {
                        gate: e.alloc(rows * w, "shared expert gate")?,
                        up: e.alloc(rows * w, "shared expert up")?,
                        out: e.alloc(rows * h, "shared expert output")?,
                        scale: e.alloc(rows, "shared expert scale")?,
                    }),
                    None => None,
                },
            }),
            _ => None,
        },
        feature_in: FeatureInputs {
            mlp_in: edits
                .reads(FeatureSource::MlpIn, None)
                .then(|| e.alloc(rows * h, "transcoder input"))
                .transpose()?,
            resid_mid: edits
                .reads(FeatureSource::ResidMid, None)
                .then(|| e.alloc(rows * h, "transcoder input (residual)"))
                .transpose()?,
        },
    };
    if matches!(req.input, Input::Ids(_)) && s.positions == Positions::LearnedWithTokenType {
        e.norm(&x, NormSel::Embedding, &sc.normed, rows)?;
        std::mem::swap(&mut x, &mut sc.normed);
    }

    // RoPE tables for the positions of this run: global and, when some layer uses them, local.
    let total_len = past + t;
    let (global, local) = match (&s.rope, s.positions) {
        (Some(r), Positions::Rope) => {
            let g = r.tables(&positions, false, total_len);
            let l = if s.layers.iter().any(|k| k.rope == LayerRope::Local) {
                Some(r.tables(&positions, true, total_len))
            } else {
                None
            };
            (Some(g), l)
        }
        _ => (None, None),
    };
    // Uploaded once per run; every layer's q and k rotate with the same buffers.
    let mut upload = |t: Option<(Vec<f32>, Vec<f32>)>| -> Result<Option<(E::Buf, E::Buf)>> {
        t.map(|(c, s)| Ok((e.upload(&c, "rope cos")?, e.upload(&s, "rope sin")?)))
            .transpose()
    };
    let (global, local) = (upload(global)?, upload(local)?);
    if let Some(c) = cache.as_deref_mut() {
        while c.k.len() < n {
            // The linear-attention layers keep a state instead of keys and values.
            // So do layers reading an earlier layer's keys and values.
            let l = c.k.len();
            let kv = if s.layers[l].mixer == Mixer::DeltaNet
                || matches!(s.layers[l].kv, KvSource::Shared(_))
            {
                1
            } else {
                b * c.capacity * s.kv_dim_at(l)
            };
            c.k.push(e.alloc(kv, "key cache")?);
            c.v.push(e.alloc(kv, "value cache")?);
        }
        // A session starting over (or new) starts from a zero state.
        if c.len == 0 || c.delta.len() < n {
            c.delta = fresh_states(e, &s, b)?;
        }
    }
    // Without a session, each run starts from a zero state.
    let own_states = match cache {
        Some(_) => Vec::new(),
        None => fresh_states(e, &s, b)?,
    };

    let mut slots = Slots {
        residual: vec![None; n + 1],
        attention: vec![None; n],
        attn_out: vec![None; n],
        mlp_out: vec![None; n],
        head_z: vec![None; n],
        mlp_in: vec![None; n],
        attn_post: vec![None; n],
        mlp_post: vec![None; n],
        lens: vec![None; n + 1],
        routing: vec![None; n],
        mixing: vec![None; n],
        ..Slots::default()
    };
    let ctx = Ctx {
        s: &s,
        req,
        b,
        t,
        past,
        global: global.as_ref(),
        local: local.as_ref(),
        edits: &edits,
    };
    for l in start..n {
        edits.apply(e, Site::ResidPre, l, &x, h, s.head_dim)?;
        ctx.entry(e, &x, l, &sc, &mut slots)?;
        let state = match cache.as_deref() {
            Some(c) => c.delta.get(l).cloned().flatten(),
            None => own_states.get(l).cloned().flatten(),
        };
        let state = state.as_ref();
        if s.block.parallel {
            // Both sub-layers read the same stream; their outputs are added together.
            let attn_in = ctx.sub_input(e, Sub::Attn, l, &x, &sc.normed)?;
            let mlp_in = ctx.sub_input(e, Sub::Mlp, l, &x, &sc.normed2)?;
            ctx.mixer(
                e,
                l,
                attn_in,
                &sc,
                cache.as_deref_mut(),
                state,
                &mut slots,
                None,
            )?;
            ctx.feature_inputs(e, l, mlp_in, &x, &sc)?;
            ctx.mlp(e, l, mlp_in, &x, &sc, &mut slots, None)?;
            ctx.close(e, Sub::Attn, l, &mut x, &mut sc, &mut slots)?;
            ctx.close(e, Sub::Mlp, l, &mut x, &mut sc, &mut slots)?;
        } else {
            for sub in [Sub::Attn, Sub::Mlp] {
                // Straight into x when nothing needs the sub-layer's output on its own.
                let norms = sub.norms(&s);
                // Not for experts: each reads x (its norm folded in) after the previous added.
                let experts = sub == Sub::Mlp && s.layers[l].mlp == MlpKind::Experts;
                let direct = e.fuses_residual()
                    && ctx.outputs_unused(l)
                    && !norms.output
                    && !norms.residual
                    && !experts;
                let into = direct.then_some(&x);
                let input = ctx.sub_input(e, sub, l, &x, &sc.normed)?;
                match sub {
                    Sub::Attn => {
                        let c = cache.as_deref_mut();
                        ctx.mixer(e, l, input, &sc, c, state, &mut slots, into)?
                    }
                    Sub::Mlp => {
                        ctx.feature_inputs(e, l, input, &x, &sc)?;
                        ctx.mlp(e, l, input, &x, &sc, &mut slots, into)?
                    }
                }
                if !direct {
                    ctx.close(e, sub, l, &mut x, &mut sc, &mut slots)?;
                }
            }
        }
        if let Some(pb) = &sc.ple {
            ctx.per_layer_input(e, l, &x, pb, &sc.normed)?;
        }
        if let Some(&f) = s.layer_scale.get(l) {
            e.scale(&x, rows * h, f)?;
        }
        edits.apply(e, Site::ResidPost, l, &x, h, s.head_dim)?;
    }
    ctx.entry(e, &x, n, &sc, &mut slots)?;
    let final_hidden = if s.final_norm {
        e.norm(&x, NormSel::Final, &sc.normed, rows)?;
        sc.normed.clone()
    } else {
        x.clone()
    };
    slots.final_hidden = Some(e.read(&final_hidden, 0, rows * h)?);
    if s.causal {
        let logit_rows: Vec<usize> = match req.logits {
            LogitRows::None => Vec::new(),
            LogitRows::Last => (0..b).map(|i| i * t + t - 1).collect(),
            LogitRows::All => (0..rows).collect(),
        };
        if !logit_rows.is_empty() {
            let targets: Vec<u32> = match req.targets {
                Some(tg) => tg.to_vec(),
                None => vec![u32::MAX; logit_rows.len()],
            };
            let k = cap.top_k.max(1);
            slots.logits = Some(e.logits(&final_hidden, &logit_rows, &targets, k, cap.logits)?);
        }
    }
    let mut back = e.finish()?;
    if let Some(c) = cache {
        c.len = past + t;
    }
    Ok(collect(&mut back, &slots, req, past, h, start, &s))
}

/// Checks a request against the model and the cache; returns the cached length.
fn check<B>(s: &ArchSpec, req: &Request<'_>, cache: Option<&KvCache<B>>) -> Result<usize> {
    let (b, t, h) = (req.batch, req.seq, s.hidden);
    let rows = b * t;
    if b == 0 || t == 0 {
        return Err(PrismError::Input("nothing to run: no tokens".into()));
    }
    let past = cache.map(|c| c.len).unwrap_or(0);
    if let Some(c) = cache {
        if c.batch != b {
            return Err(PrismError::Input(format!(
                "the session holds {} sequences, the request {b}",
                c.batch
            )));
        }
        if past + t > c.capacity {
            return Err(PrismError::Input(format!(
                "{} tokens do not fit the session's {} positions",
                past + t,
                c.capacity
            )));
        }
    }
    if past + t > s.context_length {
        return Err(PrismError::Input(format!(
            "{} tokens exceed the model's context of {}",
            past + t,
            s.context_length
        )));
    }
    if !req.per_sequence.is_empty() && req.per_sequence.len() != b {
        return Err(PrismError::Input(format!(
            "{} per-sequence intervention lists for {b} sequences",
            req.per_sequence.len()
        )));
    }
    // Positions beyond this run are allowed (a generation reaches them later); callers check
    // positions against their text.
    for iv in req
        .interventions
        .iter()
        .chain(req.per_sequence.iter().flatten())
    {
        iv.validate(s, s.context_length)?;
    }
    match req.input {
        Input::Ids(ids) => {
            if ids.len() != rows {
                return Err(PrismError::Input(format!(
                    "{} ids for {b} x {t} tokens",
                    ids.len()
                )));
            }
            crate::backend::check_vocab(ids, s.vocab)?;
        }
        Input::Residual { layer, data } => {
            if layer > s.n_layers || data.len() != rows * h {
                return Err(PrismError::Input(format!(
                    "a residual input at layer {layer} of {} values does not fit {b} x {t} x {h} of a {}-layer model",
                    data.len(),
                    s.n_layers
                )));
            }
            if cache.is_some() && layer > 0 {
                return Err(PrismError::Input(
                    "a KV-cached session starts at the embeddings".into(),
                ));
            }
            if let Some(why) = s.cannot_start_at(layer) {
                return Err(PrismError::Input(format!(
                    "a run of this model cannot start at layer {layer}: {why}"
                )));
            }
        }
    }
    let n_logit = match req.logits {
        LogitRows::None => 0,
        LogitRows::Last => b,
        LogitRows::All => rows,
    };
    let captured = req.capture.bytes(s, b, past, t, n_logit);
    if captured > 64 << 20 {
        crate::memory::check(
            captured + crate::memory::OVERHEAD,
            &format!("capturing {} for {b} x {t} tokens", capture_names(&req.capture)),
            "capture less (no attention maps, or a shorter text), or run on a machine with more memory",
        )?;
    }
    if let Some(tg) = req.targets {
        if tg.len() != n_logit {
            return Err(PrismError::Input(format!(
                "{} targets for {n_logit} logit rows",
                tg.len()
            )));
        }
    }
    Ok(past)
}

fn capture_names(c: &crate::backend::Capture) -> String {
    let names: Vec<&str> = [
        (c.attention, "attention maps"),
        (c.residual, "the residual stream"),
        (c.sites, "sites"),
        (c.logits, "logits"),
        (c.experts, "expert routing"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| *n)
    .collect();
    names.join(", ")
}

/// Turns the readback into a [`RunOutput`].
fn collect(
    back: &mut Readback,
    slots: &Slots,
    req: &Request<'_>,
    past: usize,
    hidden: usize,
    start: usize,
    s: &ArchSpec,
) -> RunOutput {
    let mut take = |slot: Option<usize>| -> Vec<f32> {
        slot.and_then(|i| back.data.get_mut(i).map(std::mem::take))
            .unwrap_or_default()
    };
    let cap = req.capture;
    let mut out = RunOutput {
        batch: req.batch,
        seq: req.seq,
        past,
        hidden,
        ..RunOutput::default()
    };
    out.final_hidden = take(slots.final_hidden);
    if cap.residual {
        out.residual = Some(slots.residual.iter().map(|&sl| take(sl)).collect());
    }
    if cap.attention {
        out.attention = Some(slots.attention.iter().map(|&sl| take(sl)).collect());
    }
    if cap.sites {
        out.sites = Some(Sites {
            attn_out: slots.attn_out.iter().map(|&sl| take(sl)).collect(),
            mlp_out: slots.mlp_out.iter().map(|&sl| take(sl)).collect(),
            head_z: slots.head_z.iter().map(|&sl| take(sl)).collect(),
            mlp_in: slots.mlp_in.iter().map(|&sl| take(sl)).collect(),
            attn_post: slots.attn_post.iter().map(|&sl| take(sl)).collect(),
            mlp_post: slots.mlp_post.iter().map(|&sl| take(sl)).collect(),
        });
    }
    if let (true, Some(d)) = (cap.attention, s.delta_net) {
        // Value heads in the checkpoint's order, whatever order the file stores them in.
        let n = req.seq * req.seq;
        let reorder = |m: Vec<f32>| -> Vec<f32> {
            if m.is_empty() || d.grouping == crate::arch::HeadGrouping::Grouped {
                return m;
            }
            let mut o = vec![0f32; m.len()];
            for (i, block) in m.chunks(n).enumerate() {
                let (b, h) = (i / d.v_heads, i % d.v_heads);
                let dst = (b * d.v_heads + d.checkpoint_head(h)) * n;
                o[dst..dst + n].copy_from_slice(block);
            }
            o
        };
        out.mixing = Some(slots.mixing.iter().map(|&sl| reorder(take(sl))).collect());
    }
    if let Some(sl) = slots.logits {
        out.logits = back.logits.get_mut(sl).map(std::mem::take);
    }
    if let (true, Some(x)) = (cap.experts, s.experts) {
        out.routing = Some(
            slots
                .routing
                .iter()
                .map(|sl| {
                    sl.map(|(p, w)| Routing {
                        experts: x.count,
                        probs: take(Some(p)),
                        weights: take(Some(w)),
                    })
                })
                .collect(),
        );
    }
    if cap.logit_lens && slots.lens.iter().any(Option::is_some) {
        out.logit_lens = Some(
            slots
                .lens
                .iter()
                .enumerate()
                .map(|(entry, &sl)| match sl {
                    Some(i) if entry >= start => back
                        .logits
                        .get_mut(i)
                        .map(|l| std::mem::take(&mut l.stats.top))
                        .unwrap_or_default(),
                    _ => Vec::new(),
                })
                .collect(),
        );
    }
    out
}

/// Scratch buffers reused by every layer.
struct Scratch<B> {
    normed: B,
    normed2: B,
    q: B,
    k: B,
    v: B,
    qn: B,
    kn: B,
    z: B,
    attn: B,
    attn2: B,
    gate: B,
    up: B,
    mlp: B,
    mlp2: B,
    lens: B,
    probs: Option<B>,
    attn_gate: B,
    vn: B,
    kept: Vec<Option<(B, B)>>,
    ple: Option<PleBufs<B>>,
    experts: Option<ExpertBufs<B>>,
    delta: Option<DeltaScratch<B>>,
    feature_in: FeatureInputs<B>,
}

/// The per-layer inputs' buffers (Gemma 4): the scaled embedding `[rows, hidden]`, two
/// `[rows, p]` and the layer's addition `[rows, hidden]`.
struct PleBufs<B> {
    emb: B,
    a: B,
    b: B,
    out: B,
}

/// The buffers of the Gated DeltaNet layers, and their mixing matrices when captured.
struct DeltaScratch<B> {
    bufs: DeltaBufs<B>,
    mixing: Option<B>,
}

/// Zero Gated DeltaNet states for `b` sequences, one per linear-attention layer.
fn fresh_states<E: Exec>(
    e: &mut E,
    s: &ArchSpec,
    b: usize,
) -> Result<Vec<Option<DeltaState<E::Buf>>>> {
    let Some(d) = s.delta_net else {
        return Ok(Vec::new());
    };
    s.layers
        .iter()
        .map(|k| {
            if k.mixer != Mixer::DeltaNet {
                return Ok(None);
            }
            Ok(Some(DeltaState {
                conv: e.alloc(b * d.conv_state_len(), "linear attention conv state")?,
                rec: e.alloc(b * d.state_len(), "linear attention state")?,
            }))
        })
        .collect()
}

/// The buffers of the mixture-of-experts layers: router probabilities and routing weights
/// `[rows, experts]`, and the experts' scratch.
struct ExpertBufs<B> {
    probs: B,
    weights: B,
    scratch: ExpertScratch<B>,
    shared: Option<SharedBufs<B>>,
    beside: Option<BesideBufs<B>>,
}

/// The buffers of experts beside a dense MLP (Gemma 4), `[rows, hidden]` each: the dense MLP's
/// normed output, the router's and experts' normed input, the experts' output.
struct BesideBufs<B> {
    dense: B,
    input: B,
    experts: B,
}

/// The shared expert's buffers: gate and up `[rows, width]`, out `[rows, hidden]`, its gate's
/// logit per row.
struct SharedBufs<B> {
    gate: B,
    up: B,
    out: B,
    scale: B,
}

/// Slots of the readback.
#[derive(Default)]
struct Slots {
    residual: Vec<Option<usize>>,
    attention: Vec<Option<usize>>,
    attn_out: Vec<Option<usize>>,
    mlp_out: Vec<Option<usize>>,
    head_z: Vec<Option<usize>>,
    mlp_in: Vec<Option<usize>>,
    attn_post: Vec<Option<usize>>,
    mlp_post: Vec<Option<usize>>,
    final_hidden: Option<usize>,
    logits: Option<usize>,
    /// Logit-lens slots per residual entry.
    lens: Vec<Option<usize>>,
    /// (router probabilities, routing weights) per mixture-of-experts layer.
    routing: Vec<Option<(usize, usize)>>,
    /// The unrolled gated delta rule per linear-attention layer.
    mixing: Vec<Option<usize>>,
}

/// A block's two sub-layers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sub {
    Attn,
    Mlp,
}

impl Sub {
    fn norms(self, s: &ArchSpec) -> SublayerNorms {
        match self {
            Sub::Attn => s.block.attn,
            Sub::Mlp => s.block.mlp,
        }
    }

    /// The norm on the input or the residual, and the one on the output.
    fn norm_ids(self) -> (NormId, NormId) {
        match self {
            Sub::Attn => (NormId::Attn, NormId::PostAttn),
            Sub::Mlp => (NormId::Mlp, NormId::PostMlp),
        }
    }
}

/// What every layer of a run shares.
struct Ctx<'a, B> {
    s: &'a ArchSpec,
    req: &'a Request<'a>,
    b: usize,
    t: usize,
    past: usize,
    global: Option<&'a (B, B)>,
    local: Option<&'a (B, B)>,
    edits: &'a Edits<'a>,
}

impl<B: Clone> Ctx<'_, B> {
    /// Nothing reads layer `l`'s attention or MLP output on its own: no capture of the sites and
    /// no intervention there.
    fn outputs_unused(&self, l: usize) -> bool {
        !self.req.capture.sites
            && [Site::AttnOut, Site::MlpOut, Site::AttnAdded, Site::MlpAdded]
                .iter()
                .all(|&site| self.edits.at(site, l).is_empty())
    }

    /// Residual entry `entry` (the stream entering block `entry`): captured, and through the lens.
    fn entry<E: Exec<Buf = B>>(
        &self,
        e: &mut E,
        x: &E::Buf,
        entry: usize,
        sc: &Scratch<E::Buf>,
        slots: &mut Slots,
    ) -> Result<()> {
        let rows = self.b * self.t;
        let cap = self.req.capture;
        if cap.residual {
            slots.residual[entry] = Some(e.read(x, 0, rows * self.s.hidden)?);
        }
        if cap.logit_lens && self.s.causal {
            let src = if self.s.final_norm {
                e.norm(x, NormSel::Final, &sc.lens, rows)?;
                &sc.lens
            } else {
                x
            };
            let all: Vec<usize> = (0..rows).collect();
            slots.lens[entry] = Some(e.logits(src, &all, &vec![u32::MAX; rows], 5, false)?);
        }
        Ok(())
    }

    /// The input of sub-layer `sub` of layer `l`: x, normalized (into `normed`, or folded into the
    /// matmuls that read it) when the block says so.
    fn sub_input<'b, E: Exec<Buf = B>>(
        &self,
        e: &mut E,
        sub: Sub,
        l: usize,
        x: &'b E::Buf,
        normed: &'b E::Buf,
    ) -> Result<LinearIn<'b, E::Buf>> {
        if sub.norms(self.s).input {
            e.norm_input(
                x,
                NormSel::Layer(l, sub.norm_ids().0),
                normed,
                self.b * self.t,
            )
        } else {
            Ok(LinearIn::plain(x))
        }
    }

    /// Adds sub-layer `sub`'s output (in `sc.attn` / `sc.mlp`) into the residual stream `x`,
    /// normalizing the output before and the stream after the add when the block says so.
    fn close<E: Exec<Buf = B>>(
        &self,
        e: &mut E,
        sub: Sub,
        l: usize,
        x: &mut E::Buf,
        sc: &mut Scratch<E::Buf>,
        slots: &mut Slots,
    ) -> Result<()> {
        let rows = self.b * self.t;
        let n = rows * self.s.hidden;
        let norms = sub.norms(self.s);
        let (main, post) = sub.norm_ids();
        let (out, normed_out, site) = match sub {
            Sub::Attn => (&sc.attn, &sc.attn2, Site::AttnAdded),
            Sub::Mlp => (&sc.mlp, &sc.mlp2, Site::MlpAdded),
        };
        // What the sub-layer adds: its output, after its post-norm where the block has one.
        let added = if norms.output {
            e.norm(out, NormSel::Layer(l, post), normed_out, rows)?;
            normed_out
        } else {
            out
        };
        let inputs = (sub == Sub::Mlp).then_some(&sc.feature_in);
        let (h, hd) = (self.s.hidden, self.s.head_dim);
        self.edits.apply_reading(e, site, l, added, h, hd, inputs)?;
        if norms.output && self.req.capture.sites {
            let slot = e.read(added, 0, n)?;
            match sub {
                Sub::Attn => slots.attn_post[l] = Some(slot),
                Sub::Mlp => slots.mlp_post[l] = Some(slot),
            }
        }
        e.add(added, x, n)?;
        if norms.residual {
            e.norm(x, NormSel::Layer(l, main), &sc.normed, rows)?;
            std::mem::swap(x, &mut sc.normed);
        }
        Ok(())
    }

    /// The token mixer of layer `l`: attention, or a Gated DeltaNet continuing `state`.
    #[allow(clippy::too_many_arguments)]
    fn mixer<E: Exec<Buf = B>>(
        &self,
        e: &mut E,
        l: usize,
        input: LinearIn<'_, E::Buf>,
        sc: &Scratch<E::Buf>,
        cache: Option<&mut KvCache<E::Buf>>,
        state: Option<&DeltaState<E::Buf>>,
        slots: &mut Slots,
        residual: Option<&E::Buf>,
    ) -> Result<()> {
        if self.s.layers[l].mixer == Mixer::Attention {
            return self.attention(e, l, input, sc, cache, slots, residual);
        }
        let (Some(ds), Some(state), Some(d)) = (&sc.delta, state, self.s.delta_net) else {
            return Err(PrismError::Backend(format!(
                "layer {l} is a linear-attention layer without its buffers (a bug in Prism)"
            )));
        };
        let rows = self.b * self.t;
        let bufs = &ds.bufs;
        e.linear(input, l, LinearId::DeltaQkv, &bufs.qkv, rows, false)?;
        e.linear(input, l, LinearId::DeltaZ, &bufs.z, rows, false)?;
        e.linear(input, l, LinearId::DeltaB, &bufs.b, rows, false)?;
        e.linear(input, l, LinearId::DeltaA, &bufs.a, rows, false)?;
        let mixing = ds.mixing.as_ref();
        e.delta_net(l, bufs, state, self.b, self.t, mixing)?;
        if let Some(m) = mixing {
            slots.mixing[l] = Some(e.read(m, 0, self.b * d.v_heads * self.t * self.t)?);
        }
        let core = LinearIn::plain(&bufs.core);
        if let Some(x) = residual {
            return e.linear(core, l, LinearId::DeltaOut, x, rows, true);
        }
        e.linear(core, l, LinearId::DeltaOut, &sc.attn, rows, false)?;
        self.edits.apply(
            e,
            Site::AttnOut,
            l,
            &sc.attn,
            self.s.hidden,
            self.s.head_dim,
        )?;
        if self.req.capture.sites {
            slots.attn_out[l] = Some(e.read(&sc.attn, 0, rows * self.s.hidden)?);
        }
        Ok(())
    }

    /// The attention sub-layer of layer `l` on `input`; its output lands in `sc.attn`, or is added
    /// into `residual` when one is given (nothing reads it on its own then).
    #[allow(clippy::too_many_arguments)]
    fn attention<E: Exec<Buf = B>>(
        &self,
        e: &mut E,
        l: usize,
        input: LinearIn<'_, E::Buf>,
        sc: &Scratch<E::Buf>,
        cache: Option<&mut KvCache<E::Buf>>,
        slots: &mut Slots,
        residual: Option<&E::Buf>,
    ) -> Result<()> {
        let s = self.s;
        let (b, t) = (self.b, self.t);
        let rows = b * t;
        let (nh, nkv, hd) = (s.n_heads, s.kv_heads_at(l), s.head_dim_at(l));
        let kind = s.layers[l];
        let (table, dims) = match (kind.rope, s.rope.as_ref()) {
            (LayerRope::Global, Some(r)) => (self.global, r.dims_for(false)),
            (LayerRope::Local, Some(r)) => (self.local, r.dims_for(true)),
            _ => (None, 0),
        };
        e.linear(input, l, LinearId::Q, &sc.q, rows, false)?;
        let q = if s.qk_norm != QkNorm::None {
            let qg = s.qk_norm.groups(rows, nh);
            e.norm(&sc.q, NormSel::Layer(l, NormId::Q), &sc.qn, qg)?;
            &sc.qn
        } else {
            &sc.q
        };
        if let Some((cos, sin)) = table {
            e.rope(q, rows, nh, hd, dims, cos, sin)?;
        }
        let kv = s.kv_dim_at(l);
        let (keys, values, key_stride) = if let KvSource::Shared(src) = kind.kv {
            // An earlier layer's keys and values, as it stored them in this run.
            match (cache, &sc.kept[src]) {
                (Some(c), _) => (c.k[src].clone(), c.v[src].clone(), c.capacity),
                (None, Some((k, v))) => (k.clone(), v.clone(), t),
                (None, None) => {
                    return Err(PrismError::Backend(format!(
                        "layer {l} reads layer {src}'s keys, which were not kept (a bug in Prism)"
                    )))
                }
            }
        } else {
            e.linear(input, l, LinearId::K, &sc.k, rows, false)?;
            if kind.kv == KvSource::KeysAsValues {
                e.copy(&sc.k, 0, &sc.v, 0, rows * kv)?;
            } else {
                e.linear(input, l, LinearId::V, &sc.v, rows, false)?;
            }
            let k = if s.qk_norm != QkNorm::None {
                let kg = s.qk_norm.groups(rows, nkv);
                e.norm(&sc.k, NormSel::Layer(l, NormId::K), &sc.kn, kg)?;
                &sc.kn
            } else {
                &sc.k
            };
            let v = if s.v_norm {
                e.norm(&sc.v, NormSel::Layer(l, NormId::V), &sc.vn, rows * nkv)?;
                &sc.vn
            } else {
                &sc.v
            };
            if let Some((cos, sin)) = table {
                e.rope(k, rows, nkv, hd, dims, cos, sin)?;
            }
            match cache {
                Some(c) => {
                    for seq in 0..b {
                        let dst = (seq * c.capacity + self.past) * kv;
                        e.copy(k, seq * t * kv, &c.k[l], dst, t * kv)?;
                        e.copy(v, seq * t * kv, &c.v[l], dst, t * kv)?;
                    }
                    (c.k[l].clone(), c.v[l].clone(), c.capacity)
                }
                None => {
                    if let Some((kk, vv)) = &sc.kept[l] {
                        e.copy(k, 0, kk, 0, rows * kv)?;
                        e.copy(v, 0, vv, 0, rows * kv)?;
                    }
                    (k.clone(), v.clone(), t)
                }
            }
        };
        let shape = AttnShape {
            batch: b,
            seq: t,
            past: self.past,
            keys: self.past + t,
            key_stride,
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
            scale: s.attn_scale,
            softcap: s.attn_softcap,
            window: kind.window,
            causal: s.causal,
            layer: l,
            sinks: s.attn_sinks,
        };
        e.attention(q, &keys, &values, &sc.z, &shape, sc.probs.as_ref())?;
        if let Some(p) = &sc.probs {
            slots.attention[l] = Some(e.read(p, 0, b * nh * t * (self.past + t))?);
        }
        if s.attn_gate {
            // Gated attention: each head's output times sigmoid of its gate, before o.
            e.linear(input, l, LinearId::AttnGate, &sc.attn_gate, rows, false)?;
            e.sigmoid_gate(&sc.z, &sc.attn_gate, rows * nh * hd, 1)?;
        }
        self.edits.apply(e, Site::Head, l, &sc.z, nh * hd, hd)?;
        if self.req.capture.sites {
            slots.head_z[l] = Some(e.read(&sc.z, 0, rows * nh * hd)?);
        }
        if let Some(x) = residual {
            return e.linear(LinearIn::plain(&sc.z), l, LinearId::O, x, rows, true);
        }
        e.linear(
            LinearIn::plain(&sc.z),
            l,
            LinearId::O,
            &sc.attn,
            rows,
            false,
        )?;
        self.edits
            .apply(e, Site::AttnOut, l, &sc.attn, s.hidden, hd)?;
        if self.req.capture.sites {
            slots.attn_out[l] = Some(e.read(&sc.attn, 0, rows * s.hidden)?);
        }
        Ok(())
    }

    /// Gemma 4's per-layer input at the end of layer `l`: ple = (norm(emb W_model / sqrt(hidden))
    /// + table[ids] sqrt(p)) / sqrt(2), then x += norm(act(x W_gate) * ple W_proj).
    fn per_layer_input<E: Exec<Buf = B>>(
        &self,
        e: &mut E,
        l: usize,
        x: &E::Buf,
        pb: &PleBufs<E::Buf>,
        normed: &E::Buf,
    ) -> Result<()> {
        let (Some(p), Input::Ids(ids)) = (self.s.per_layer_input, self.req.input) else {
            return Err(PrismError::Backend(
                "per-layer inputs without the token ids (a bug in Prism)".into(),
            ));
        };
        let rows = self.b * self.t;
        let (n, h) = (rows * p, self.s.hidden);
        e.linear(
            LinearIn::plain(&pb.emb),
            l,
            LinearId::PleModel,
            &pb.a,
            rows,
            false,
        )?;
        e.scale(&pb.a, n, (1.0 / (h as f64).sqrt()) as f32)?;
        e.norm(&pb.a, NormSel::Layer(l, NormId::PleProj), &pb.b, rows)?;
        // The table's rows are added at the norm's scale over sqrt(p), then both scaled back.
        let root = (p as f64).sqrt();
        e.scale(&pb.b, n, (1.0 / root) as f32)?;
        e.add_table_rows(Table::PerLayer(l), ids, &pb.b)?;
        e.scale(&pb.b, n, (root * std::f64::consts::FRAC_1_SQRT_2) as f32)?;
        e.linear(LinearIn::plain(x), l, LinearId::PleGate, &pb.a, rows, false)?;
        e.activate(&pb.a, n)?;
        e.mul(&pb.b, &pb.a, n)?;
        e.linear(
            LinearIn::plain(&pb.a),
            l,
            LinearId::PleProj,
            &pb.out,
            rows,
            false,
        )?;
        e.norm(&pb.out, NormSel::Layer(l, NormId::PlePost), normed, rows)?;
        e.add(normed, x, rows * h)
    }

    /// Keeps what transcoder feature edits at layer `l`'s MLP output read: the MLP's normalized
    /// input (`input`, its norm applied where a backend folded it into the matmuls) and the
    /// residual stream `x` entering the MLP's norm.
    fn feature_inputs<E: Exec<Buf = B>>(
        &self,
        e: &mut E,
        l: usize,
        input: LinearIn<'_, E::Buf>,
        x: &E::Buf,
        sc: &Scratch<E::Buf>,
    ) -> Result<()> {
        let n = self.b * self.t * self.s.hidden;
        let fi = &sc.feature_in;
        if let Some(buf) = fi.mlp_in.as_ref() {
            if self.edits.reads(FeatureSource::MlpIn, Some(l)) {
                match input.norm {
                    Some(sel) => e.norm(input.x, sel, buf, self.b * self.t)?,
                    None => e.copy(input.x, 0, buf, 0, n)?,
                }
            }
        }
        if let Some(buf) = fi.resid_mid.as_ref() {
            if self.edits.reads(FeatureSource::ResidMid, Some(l)) {
                e.copy(x, 0, buf, 0, n)?;
            }
        }
        Ok(())
    }

    /// The MLP of layer `l` on `input` (the residual stream `x`, normalized); its output lands in
    /// `sc.mlp`, or is added into `residual`.
    #[allow(clippy::too_many_arguments)]
    fn mlp<E: Exec<Buf = B>>(
        &self,
        e: &mut E,
        l: usize,
        input: LinearIn<'_, E::Buf>,
        x: &E::Buf,
        sc: &Scratch<E::Buf>,
        slots: &mut Slots,
        residual: Option<&E::Buf>,
    ) -> Result<()> {
        let s = self.s;
        let rows = self.b * self.t;
        let n = rows * s.mlp_width_at(l);
        let (dst, acc) = match residual {
            Some(x) => (x, true),
            None => (&sc.mlp, false),
        };
        if self.req.capture.sites {
            // The normalized input, materialized in the output buffer before the MLP writes it
            // (a backend may have folded the norm into the matmuls).
            slots.mlp_in[l] = Some(match input.norm {
                Some(sel) => {
                    e.norm(input.x, sel, &sc.mlp, rows)?;
                    e.read(&sc.mlp, 0, rows * s.hidden)?
                }
                None => e.read(input.x, 0, rows * s.hidden)?,
            });
        }
        if let (MlpKind::Experts, Some(xb), Some(xs), Some(bb)) = (
            s.layers[l].mlp,
            &sc.experts,
            s.experts,
            sc.experts.as_ref().and_then(|b| b.beside.as_ref()),
        ) {
            // Gemma 4: the dense MLP, and beside it the experts, each on its own norm of x.
            let h = s.hidden;
            e.linear_gated(input, l, MlpId::Dense, &sc.gate, &sc.up, rows)?;
            e.linear(
                LinearIn::plain(&sc.gate),
                l,
                LinearId::Down,
                &sc.mlp,
                rows,
                false,
            )?;
            e.norm(
                &sc.mlp,
                NormSel::Layer(l, NormId::PostDense),
                &bb.dense,
                rows,
            )?;
            let router_in = e.norm_input(x, NormSel::Layer(l, NormId::Router), &bb.input, rows)?;
            e.route(router_in, l, &xb.probs, &xb.weights, rows)?;
            self.edits
                .apply(e, Site::Expert, l, &xb.weights, xs.count, 1)?;
            if self.req.capture.experts {
                let n = rows * xs.count;
                slots.routing[l] = Some((e.read(&xb.probs, 0, n)?, e.read(&xb.weights, 0, n)?));
            }
            let experts_in =
                e.norm_input(x, NormSel::Layer(l, NormId::PreExperts), &bb.input, rows)?;
            e.experts(
                experts_in,
                l,
                &xb.weights,
                &xb.scratch,
                &bb.experts,
                rows,
                false,
            )?;
            e.norm(
                &bb.experts,
                NormSel::Layer(l, NormId::PostExperts),
                &sc.mlp,
                rows,
            )?;
            e.add(&bb.dense, &sc.mlp, rows * h)?;
            if let Some(r) = residual {
                e.add(&sc.mlp, r, rows * h)?;
                return Ok(());
            }
        } else if let (MlpKind::Experts, Some(xb), Some(x)) =
            (s.layers[l].mlp, &sc.experts, s.experts)
        {
            e.route(input, l, &xb.probs, &xb.weights, rows)?;
            self.edits
                .apply(e, Site::Expert, l, &xb.weights, x.count, 1)?;
            if self.req.capture.experts {
                let n = rows * x.count;
                slots.routing[l] = Some((e.read(&xb.probs, 0, n)?, e.read(&xb.weights, 0, n)?));
            }
            e.experts(input, l, &xb.weights, &xb.scratch, dst, rows, acc)?;
            if let Some(sh) = &xb.shared {
                // The shared expert, times sigmoid of its gate, added to the routed sum.
                let h = s.hidden;
                e.linear_gated(input, l, MlpId::Shared, &sh.gate, &sh.up, rows)?;
                let inner = LinearIn::plain(&sh.gate);
                e.linear(inner, l, LinearId::SharedDown, &sh.out, rows, false)?;
                e.linear(input, l, LinearId::SharedScale, &sh.scale, rows, false)?;
                e.sigmoid_gate(&sh.out, &sh.scale, rows * h, h)?;
                e.add(&sh.out, dst, rows * h)?;
            }
        } else if s.activation.is_gated() {
            e.linear_gated(input, l, MlpId::Dense, &sc.gate, &sc.up, rows)?;
            e.linear(LinearIn::plain(&sc.gate), l, LinearId::Down, dst, rows, acc)?;
        } else {
            e.linear(input, l, LinearId::Up, &sc.up, rows, false)?;
            e.activate(&sc.up, n)?;
            e.linear(LinearIn::plain(&sc.up), l, LinearId::Down, dst, rows, acc)?;
        }
        if residual.is_some() {
            return Ok(());
        }
        let inputs = Some(&sc.feature_in);
        self.edits
            .apply_reading(e, Site::MlpOut, l, &sc.mlp, s.hidden, s.head_dim, inputs)?;
        if self.req.capture.sites {
            slots.mlp_out[l] = Some(e.read(&sc.mlp, 0, rows * s.hidden)?);
        }
        Ok(())
    }
}
