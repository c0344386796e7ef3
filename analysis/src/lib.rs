//! Prism's headless core: checkpoints, architectures, backends, traces and metrics.
//! It never depends on a GUI toolkit, so the CLI, the tests and the benchmarks run it as is.

// Input decides what happens here: no unwrap or expect outside tests, errors carry context instead.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod ablation;
pub mod actcache;
pub mod arch;
pub mod atomic;
pub mod backend;
pub mod batch;
pub mod checkpoint;
pub mod corpus;
pub mod error;
pub mod figure;
pub mod generate;
pub mod geometry;
pub mod gguf;
pub mod guard;
pub mod intervene;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod patching;
pub mod quant;
pub mod rng;
pub mod sae;
pub mod samples;
#[macro_use]
pub mod simd;
pub mod steering;
pub mod template;
pub mod tokenizer;
pub mod trace;
pub mod weights;

pub use error::{PrismError, Result};
