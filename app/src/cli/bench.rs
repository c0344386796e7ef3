//! `prism bench`: timed forward passes, CPU and GPU side by side.

use std::time::Instant;

use clap::Args;
use prism_analysis::backend::{self, BackendChoice, Capture};
use serde::Serialize;

use super::{load_model, ModelArg, UsageError};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Sequence lengths to time, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "32,128,512")]
    pub tokens: Vec<usize>,
    /// Backends to time, comma-separated (cpu, gpu, auto).
    #[arg(long, value_delimiter = ',', default_value = "cpu,gpu")]
    pub backend: Vec<String>,
    /// What each pass captures: none, all, or a comma list of attention, residual, logits, lens
    /// (the logit lens) and sites (attention/MLP outputs and per-head values).
    #[arg(long, default_value = "none")]
    pub capture: String,
    /// Timed passes per point, after 2 warm-up passes.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeats: u32,
    /// Print a JSON list instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also report the time per op kind (CPU: wall time of each op; GPU: timestamp queries where
    /// the adapter has them).
    #[arg(long)]
    pub profile: bool,
    /// Also time greedy generation of this many tokens (KV cache, no early stop) from the first
    /// 8 tokens of the benchmark text, as `scripts/bench_torch.py --generate` times transformers.
    #[arg(long, default_value_t = 0)]
    pub generate: usize,
}

#[derive(Serialize)]
struct GenPoint {
    backend: String,
    new_tokens: usize,
    seconds: f64,
    /// New tokens / total time, prompt pass included (as transformers' `generate` is timed).
    tokens_per_s: f64,
}

/// The parameters one token uses: all of them, less the experts it is not routed to.
fn active_params(params: f64, s: &prism_analysis::arch::ArchSpec) -> f64 {
    let Some(x) = s.experts else {
        return params;
    };
    let moe = s
        .layers
        .iter()
        .filter(|k| k.mlp == prism_analysis::arch::MlpKind::Experts)
        .count();
    let idle = (x.count - x.top_k) * 3 * s.hidden * x.width;
    params - (moe * idle) as f64
}

/// Dense-matmul work per token: 2 · active parameters, plus the logit lens's extra unembedding of
/// every block's output when it is captured.
fn flops_per_token(params: f64, s: &prism_analysis::arch::ArchSpec, cap: Capture) -> f64 {
    let lens = if cap.logit_lens {
        2.0 * (s.n_layers * s.vocab * s.hidden) as f64
    } else {
        0.0
    };
    2.0 * params + lens
}

fn parse_capture(spec: &str) -> anyhow::Result<Capture> {
    let mut c = Capture::default();
    for part in spec.split(',').map(str::trim) {
        match part {
            "none" => {}
            "all" => c = Capture::all(),
            "attention" => c.attention = true,
            "residual" => c.residual = true,
            "logits" => c.logits = true,
            "lens" => c.logit_lens = true,
            "sites" => c.sites = true,
            other => {
                return Err(UsageError(format!(
                "unknown capture {other:?} (none, all, attention, residual, logits, lens, sites)"
            ))
                .into())
            }
        }
    }
    Ok(c)
}

/// Times greedy generation the way the PyTorch script times `generate`: after a short warm-up,
/// the whole call, prompt pass included.
fn bench_generation(
    model: &prism_analysis::checkpoint::Model,
    b: &dyn backend::Backend,
    n: usize,
) -> anyhow::Result<GenPoint> {
    use prism_analysis::generate::{generate, GenSettings, Sampling};
    let prompt: Vec<u32> = bench_ids(model, 8)?;
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let settings = |max_tokens| GenSettings {
        max_tokens,
        sampling: Sampling::default(),
        stop: Vec::new(),
    };
    generate(model, b, &prompt, &settings(4), &[], &cancel, &mut |_| {})?;
    let t = Instant::now();
    let g = generate(model, b, &prompt, &settings(n), &[], &cancel, &mut |_| {})?;
    let seconds = t.elapsed().as_secs_f64();
    Ok(GenPoint {
        backend: b.describe(),
        new_tokens: g.tokens.len(),
        seconds,
        tokens_per_s: g.tokens.len() as f64 / seconds,
    })
}

#[derive(Serialize)]
struct Point {
    backend: String,
    adapter: Option<String>,
    tokens: usize,
    capture: String,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    tokens_per_s: f64,
    gflops: f64,
    /// The dense-matmul work over the GPU time of the matmul shaders (matmul.wgsl in both tile
    /// sizes, and matvec.wgsl)
    /// alone, from the profile: what the "30% of the f32 peak" is measured on.
    matmul_gflops: Option<f64>,
    load_ms: f64,
    gpu_weight_bytes: Option<u64>,
    gpu_peak_bytes: Option<u64>,
    /// Peak resident memory of the process so far (bytes).
    peak_rss_bytes: Option<u64>,
    /// (op, ms per pass, calls per pass), with --profile.
    profile: Vec<(String, f64, f64)>,
}

/// The process's peak resident set (VmHWM), where the OS reports it.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Token ids for a benchmark: a real text tokenized (a fixed pattern without a tokenizer),
/// repeated to `n` (0: the text once).
fn bench_ids(model: &prism_analysis::checkpoint::Model, n: usize) -> anyhow::Result<Vec<u32>> {
    const TEXT: &str = "Photosynthesis is the process by which green plants, algae and some bacteria convert light energy into chemical energy. During this process, carbon dioxide and water are combined to produce glucose and oxygen. ";
    let mut ids = match &model.tokenizer {
        Some(t) => t.encode(TEXT, false)?,
        None => (0..64)
            .map(|i| (i * 7919 % model.spec.vocab) as u32)
            .collect(),
    };
    if ids.is_empty() {
        ids.push(0);
    }
    if n == 0 {
        return Ok(ids);
    }
    Ok(ids.iter().cycle().take(n).copied().collect())
}

pub fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let capture = parse_capture(&a.capture)?;
    let started = Instant::now();
    let model = load_model(&a.model.model)?;
    let model_load_ms = started.elapsed().as_secs_f64() * 1e3;
    for &n in &a.tokens {
        if n == 0 || n > model.spec.context_length {
            return Err(UsageError(format!(
                "{n} tokens: the model takes 1 to {}",
                model.spec.context_length
            ))
            .into());
        }
    }
    let params = active_params(model.info.n_params as f64, &model.spec);
    let mut points = Vec::new();
    let mut generation = Vec::new();
    for name in &a.backend {
        let choice: BackendChoice = name.parse().map_err(UsageError)?;
        let t0 = Instant::now();
        let (b, notes) = backend::create(&model, choice)?;
        let load_ms = model_load_ms + t0.elapsed().as_secs_f64() * 1e3;
        for n in notes {
            eprintln!("prism: {n}");
        }
        let adapter = b
            .adapter()
            .map(|a| format!("{} ({}, {})", a.name, a.backend, a.device_type));
        for &n in &a.tokens {
            let ids = bench_ids(&model, n)?;
            let cap = Capture {
                top_k: 5,
                ..capture
            };
            for _ in 0..2 {
                prism_analysis::backend::run_one(b.as_ref(), &ids, cap, &[])?;
            }
            let mut times = Vec::new();
            let mut peak_run = 0;
            b.set_profiling(a.profile);
            let _ = b.take_profile();
            for _ in 0..a.repeats {
                let t = Instant::now();
                prism_analysis::backend::run_one(b.as_ref(), &ids, cap, &[])?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
                if let Some((_, run)) = b.gpu_bytes() {
                    peak_run = peak_run.max(run);
                }
            }
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            let reps = a.repeats as f64;
            let profile: Vec<(String, f64, f64)> = b
                .take_profile()
                .into_iter()
                .map(|(op, ms, n)| (op, ms / reps, n as f64 / reps))
                .collect();
            b.set_profiling(false);
            let gpu = b.gpu_bytes();
            let flops = flops_per_token(params, &model.spec, cap) * n as f64;
            let matmul_ms: f64 = profile
                .iter()
                .filter(|(op, _, _)| ["matmul", "matmul_small", "matvec"].contains(&op.as_str()))
                .map(|(_, ms, _)| ms)
                .sum();
            points.push(Point {
                backend: b.describe(),
                adapter: adapter.clone(),
                tokens: n,
                capture: a.capture.clone(),
                median_ms: median,
                min_ms: times[0],
                max_ms: times[times.len() - 1],
                tokens_per_s: n as f64 / (median / 1e3),
                gflops: flops / (median / 1e3) / 1e9,
                matmul_gflops: (matmul_ms > 0.0).then(|| flops / (matmul_ms / 1e3) / 1e9),
                load_ms,
                gpu_weight_bytes: gpu.map(|g| g.0),
                gpu_peak_bytes: gpu.map(|g| g.0 + peak_run),
                peak_rss_bytes: peak_rss(),
                profile,
            });
            if !a.json {
                let p = points.last().expect("just pushed");
                println!(
                    "{:<48} {:>5} tok  capture {:<9} median {:>9.1} ms  [{:.1} .. {:.1}]  {:>8.0} tok/s  {:>7.2} GFLOP/s{}",
                    p.backend,
                    p.tokens,
                    p.capture,
                    p.median_ms,
                    p.min_ms,
                    p.max_ms,
                    p.tokens_per_s,
                    p.gflops,
                    match p.gpu_peak_bytes {
                        Some(b) => format!("  GPU peak {:.1} MB", b as f64 / 1e6),
                        None => String::new(),
                    } + &p
                        .peak_rss_bytes
                        .map(|b| format!("  peak RSS {:.0} MB", b as f64 / 1e6))
                        .unwrap_or_default()
                );
                for (op, ms, calls) in &p.profile {
                    println!("      {op:<16} {ms:>9.2} ms per pass  ({calls:.0} calls)");
                }
                if let Some(g) = p.matmul_gflops {
                    println!("      matmul shaders alone: {g:.1} GFLOP/s");
                }
                if a.profile && p.profile.is_empty() {
                    println!("      (no per-op times: this adapter has no GPU timestamp queries)");
                }
            }
        }
        if a.generate > 0 {
            let g = bench_generation(&model, b.as_ref(), a.generate)?;
            if !a.json {
                println!(
                    "{:<48} generate {} tokens greedy: {:.2} s, {:.1} tok/s (prompt pass included)",
                    g.backend, g.new_tokens, g.seconds, g.tokens_per_s
                );
            }
            generation.push(g);
        }
        if !a.json {
            println!(
                "  load (model + backend): {load_ms:.0} ms; CPU kernels: {}{}",
                prism_analysis::simd::isa().name(),
                adapter
                    .map(|a| format!("; adapter {a}"))
                    .unwrap_or_default()
            );
        }
    }
    if a.json {
        let out = serde_json::json!({
            "model": model.info.path,
            "n_params": model.info.n_params,
            "cpu_isa": prism_analysis::simd::isa().name(),
            "ids": bench_ids(&model, 0)?,
            "passes": points,
            "generate": generation,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct BenchGeometryArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Rows of the embedding matrix projected by PCA.
    #[arg(long, default_value_t = 5000)]
    pub pca_points: usize,
    /// Rows of the embedding matrix projected by t-SNE.
    #[arg(long, default_value_t = 2000)]
    pub tsne_points: usize,
    #[arg(long)]
    pub json: bool,
}

/// Times the geometry targets: exact neighbours over the whole vocabulary, PCA and t-SNE.
pub fn bench_geometry(a: BenchGeometryArgs) -> anyhow::Result<()> {
    use prism_analysis::geometry::project::{project, Method};
    use prism_analysis::geometry::similarity::NeighborIndex;
    use prism_analysis::geometry::vectors::Table;
    let model = load_model(&a.model.model)?;
    let table = Table::from_weight(&model.weights.token_embedding)?;
    let index = NeighborIndex::new(&table);
    let mut times = Vec::new();
    for q in 0..25 {
        let query = table.row((q * 7919) % table.rows).to_vec();
        let t = Instant::now();
        let found = index.nearest(&query, 20, &[]);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if found.is_empty() {
            return Err(UsageError("neighbour search returned nothing".into()).into());
        }
    }
    times.sort_by(f64::total_cmp);
    let neighbors_ms = times[times.len() / 2];
    let rows = |n: usize| -> Vec<Vec<f32>> {
        (0..n.min(table.rows))
            .map(|i| table.row(i).to_vec())
            .collect()
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let pca_rows = rows(a.pca_points);
    let t = Instant::now();
    project(&pca_rows, Method::Pca, 2, &mut |_| {}, &cancel)?;
    let pca_ms = t.elapsed().as_secs_f64() * 1e3;
    let tsne_rows = rows(a.tsne_points);
    let t = Instant::now();
    project(&tsne_rows, Method::Tsne, 2, &mut |_| {}, &cancel)?;
    let tsne_ms = t.elapsed().as_secs_f64() * 1e3;
    let v = serde_json::json!({
        "vocabulary": table.rows, "width": table.width,
        "neighbors_median_ms": neighbors_ms,
        "pca_points": pca_rows.len(), "pca_ms": pca_ms,
        "tsne_points": tsne_rows.len(), "tsne_ms": tsne_ms,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "exact top-20 neighbours over {} x {}: median {neighbors_ms:.2} ms (25 queries)",
            table.rows, table.width
        );
        println!("PCA of {} vectors to 2-D: {pca_ms:.0} ms", pca_rows.len());
        println!(
            "t-SNE of {} vectors to 2-D: {tsne_ms:.0} ms",
            tsne_rows.len()
        );
    }
    Ok(())
}
