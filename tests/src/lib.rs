//! Shared helpers for Prism's integration tests: fixture paths, reference JSON, comparisons, and
//! the `prism` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use prism_analysis::backend::{cpu::CpuBackend, Capture};
use prism_analysis::checkpoint::{self, Model};
use prism_analysis::trace::Trace;
use serde_json::Value;

pub mod badfiles;
pub mod synth;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// llama.cpp's vocab-only GGUF `ggml-vocab-NAME.gguf`, unpacked from its zstd copy in
/// `fixtures/llama-vocab/` (kept compressed: 1.4 MB instead of 6 to 8 MB) into the temp folder, once
/// (the name carries the packed size, so a changed fixture is unpacked afresh).
pub fn llama_vocab(name: &str) -> PathBuf {
    let packed = fixtures().join(format!("llama-vocab/ggml-vocab-{name}.gguf.zst"));
    let len = std::fs::metadata(&packed).unwrap().len();
    let dir = std::env::temp_dir().join("prism-llama-vocab");
    let path = dir.join(format!("ggml-vocab-{name}-{len}.gguf"));
    if !path.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = zstd::decode_all(std::fs::File::open(&packed).unwrap()).unwrap();
        // Written under a name of its own, then renamed: no test ever reads a half-written file.
        let part = dir.join(format!(
            "{name}.{}.{:?}.part",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&part, bytes).unwrap();
        std::fs::rename(&part, &path).unwrap();
    }
    path
}

pub fn reference_dir() -> PathBuf {
    fixtures().join("reference")
}

pub fn tiny(name: &str) -> PathBuf {
    reference_dir().join("tiny").join(name)
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn load(path: &Path) -> Model {
    checkpoint::load(path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

pub fn run_cpu(model: &Model, ids: &[u32], capture: Capture) -> Trace {
    let backend = CpuBackend::new(model).expect("cpu backend");
    Trace::run(model, &backend, ids, capture, 5).expect("forward pass")
}

pub fn f64s(v: &Value) -> Vec<f64> {
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::NAN)),
            Value::Null => out.push(f64::NAN),
            other => panic!("expected numbers, found {other}"),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

pub fn u32s(v: &Value) -> Vec<u32> {
    f64s(v).into_iter().map(|x| x as u32).collect()
}

/// Largest absolute difference; panics on a length mismatch.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

pub fn as_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Row L2 norms of a flat `[rows, width]` matrix.
pub fn row_norms(data: &[f32], width: usize) -> Vec<f64> {
    data.chunks(width)
        .map(|r| r.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt())
        .collect()
}

/// The sample model's path, fetched first when it is missing (tests never skip silently: without
/// a network and without the files, they fail and say so).
pub fn sample(name: &str) -> PathBuf {
    use prism_analysis::samples;
    static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let s = samples::find(name).expect("sample in manifest");
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    if !samples::is_present(s) {
        let cancel = std::sync::atomic::AtomicBool::new(false);
        samples::fetch(s, &mut |_| {}, &cancel).unwrap_or_else(|e| {
            panic!("sample model {name:?} is missing and fetching it failed: {e}; run `cargo run --release -- fetch-samples`")
        });
    }
    samples::model_path(s).expect("sample path")
}

/// The `prism` binary built alongside these tests.
pub fn prism_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join(format!("prism{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is not built; run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

pub fn prism(args: &[&str]) -> Output {
    Command::new(prism_bin())
        .args(args)
        .output()
        .expect("running prism")
}

/// Runs prism, expects success, and parses its standard output as JSON.
pub fn json_of(args: &[&str]) -> Value {
    let out = prism(args);
    assert!(
        out.status.success(),
        "prism {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "prism {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A fresh temporary folder under the target directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "prism-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The GPU device for tests: any adapter, software ones included (lavapipe in CI). A missing
/// adapter fails the test: GPU tests are never skipped silently.
pub fn gpu() -> std::sync::Arc<prism_analysis::backend::gpu::context::GpuContext> {
    use prism_analysis::backend::gpu::context::GpuContext;
    static CTX: std::sync::OnceLock<std::sync::Arc<GpuContext>> = std::sync::OnceLock::new();
    CTX.get_or_init(|| {
        std::sync::Arc::new(GpuContext::new(true).unwrap_or_else(|e| {
            panic!("no GPU adapter for the GPU tests ({e}); install mesa-vulkan-drivers (lavapipe), as .ci/run does")
        }))
    })
    .clone()
}

/// A GPU context on each feature path this machine's adapter can run, named: "exact" (no
/// subgroups, f32 staging), "subgroups" and "fast" (f16 weight staging), each opened once. A path
/// the adapter lacks is left out (`choose_paths` never picks it).
pub fn gpu_paths() -> Vec<(
    &'static str,
    std::sync::Arc<prism_analysis::backend::gpu::context::GpuContext>,
)> {
    use prism_analysis::backend::gpu::context::{GpuContext, PathRequest};
    use std::sync::{Arc, OnceLock};
    static ALL: OnceLock<Vec<(&'static str, Arc<GpuContext>)>> = OnceLock::new();
    ALL.get_or_init(|| {
        let open = |req: PathRequest| Arc::new(GpuContext::with_paths(true, req).expect("adapter"));
        let mut v = vec![("exact", open(PathRequest::PLAIN))];
        let sg = open(PathRequest {
            subgroups: true,
            fast: false,
        });
        if sg.paths.subgroups {
            v.push(("subgroups", sg));
        }
        let fast = open(PathRequest {
            subgroups: false,
            fast: true,
        });
        if fast.paths.f16_weights {
            v.push(("fast", fast));
        }
        v
    })
    .clone()
}

pub fn run_gpu(model: &Model, ids: &[u32], capture: Capture) -> Trace {
    let backend = prism_analysis::backend::gpu::GpuBackend::new(model, gpu()).expect("gpu backend");
    Trace::run(model, &backend, ids, capture, 5).expect("gpu forward pass")
}

/// Checks one SAE's or transcoder's run as `prism features --json` prints it (`got`: its
/// `features`, `l0` and `reconstruction`) against a reference's (`want`: `features[t]` =
/// `[[id, act], ...]` top first, `l0`, `reconstruction`, `input_ids`): the same feature ids and L0,
/// activations, MSE and explained variance within 1e-4 relative, bits within 0.01 per token, and
/// a splice that changes the bits.
pub fn assert_feature_run(ctx: &str, got: &Value, want: &Value) {
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-6);
    assert_eq!(got["l0"], want["l0"], "{ctx}: L0");
    let (gf, wf) = (
        got["features"].as_array().expect("features"),
        want["features"].as_array().expect("features"),
    );
    assert_eq!(gf.len(), wf.len(), "{ctx}: tokens");
    for (t, (g, w)) in gf.iter().zip(wf).enumerate() {
        let (g, w) = (g.as_array().unwrap(), w.as_array().unwrap());
        assert_eq!(g.len(), w.len(), "{ctx}: token {t}: active features");
        for (a, b) in g.iter().zip(w) {
            assert_eq!(a["id"].as_u64(), b[0].as_u64(), "{ctx}: token {t}: ids");
            let (x, y) = (a["act"].as_f64().unwrap(), b[1].as_f64().unwrap());
            assert!(rel(x, y) <= 1e-4, "{ctx}: token {t}: {} {x} vs {y}", b[0]);
        }
    }
    let (g, w) = (&got["reconstruction"], &want["reconstruction"]);
    for k in ["mse", "explained_variance"] {
        let (x, y) = (g[k].as_f64().unwrap(), w[k].as_f64().unwrap());
        assert!(rel(x, y) <= 1e-4, "{ctx}: {k} {x} vs {y}");
    }
    let per_token = 0.01 * (u32s(&want["input_ids"]).len() - 1) as f64;
    for k in ["clean_bits", "spliced_bits"] {
        let (x, y) = (g[k].as_f64().unwrap(), w[k].as_f64().unwrap());
        assert!((x - y).abs() <= per_token, "{ctx}: {k} {x} vs {y}");
    }
    assert_ne!(
        g["spliced_bits"], g["clean_bits"],
        "{ctx}: splicing changed nothing"
    );
}

/// A run's per-token surprisal of the predicted tokens (the first token's is null).
pub fn predicted_bits(run: &Value) -> Vec<f64> {
    let all = run["surprisal_bits"].as_array().unwrap();
    assert!(all[0].is_null(), "the first token is not predicted");
    all[1..].iter().map(|v| v.as_f64().unwrap()).collect()
}

/// Each predicted token's surprisal of `run` within 0.01 bits of `want`.
#[track_caller]
pub fn assert_token_bits(ctx: &str, run: &Value, want: &[f64]) {
    let got = predicted_bits(run);
    assert_eq!(got.len(), want.len(), "{ctx}: tokens");
    for (t, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 0.01,
            "{ctx}: token {}: {g} vs {w} bits",
            t + 1
        );
    }
}
