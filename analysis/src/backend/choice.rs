//! Choosing a backend: what the user asked for (`cpu`, `gpu`, `auto`), the GPU when there is a
//! suitable one, and the CPU as the fallback when a GPU run fails under `auto`.

use std::sync::{Arc, OnceLock};

use super::{cpu, gpu, Backend, Request, RunOutput, Session};
use crate::error::{PrismError, Result};
use crate::model::Model;

/// Which backend the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Cpu,
    Gpu,
    Auto,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(BackendChoice::Cpu),
            "gpu" => Ok(BackendChoice::Gpu),
            "auto" => Ok(BackendChoice::Auto),
            other => Err(format!("unknown backend {other:?} (cpu, gpu, auto)")),
        }
    }
}

/// Builds the requested backend. Returns the backend and notes to show the user (such as a fallback).
///
/// `gpu` takes any adapter, software ones included; `auto` takes a hardware GPU when there is one
/// and otherwise the CPU, and falls back to the CPU when a GPU run fails.
pub fn create(
    model: &Arc<Model>,
    choice: BackendChoice,
) -> Result<(Box<dyn Backend>, Vec<String>)> {
    match choice {
        BackendChoice::Cpu => Ok((Box::new(cpu::CpuBackend::new(model)?), Vec::new())),
        BackendChoice::Gpu => {
            let ctx = gpu::context::GpuContext::shared(true)?;
            Ok((Box::new(gpu::GpuBackend::new(model, ctx)?), Vec::new()))
        }
        BackendChoice::Auto => {
            match gpu::context::GpuContext::shared(false)
                .and_then(|ctx| gpu::GpuBackend::new(model, ctx))
            {
                Ok(g) => Ok((with_cpu_fallback(g, model.clone()), Vec::new())),
                Err(e) => Ok((
                    Box::new(cpu::CpuBackend::new(model)?),
                    vec![format!("backend auto: using the CPU ({e})")],
                )),
            }
        }
    }
}

/// Like [`create`], with a GPU device that already exists (the app's, when eframe renders with
/// wgpu): `gpu` uses it whatever its kind, `auto` uses it when it is a hardware GPU.
pub fn create_with_device(
    model: &Arc<Model>,
    choice: BackendChoice,
    ctx: Arc<gpu::context::GpuContext>,
) -> Result<(Box<dyn Backend>, Vec<String>)> {
    match choice {
        BackendChoice::Cpu => create(model, choice),
        BackendChoice::Gpu => Ok((
            Box::new(gpu::GpuBackend::new(model, ctx)?),
            vec!["sharing the window's GPU device".into()],
        )),
        BackendChoice::Auto if !ctx.adapter.is_software() => Ok((
            with_cpu_fallback(gpu::GpuBackend::new(model, ctx)?, model.clone()),
            vec!["sharing the window's GPU device".into()],
        )),
        BackendChoice::Auto => create(model, choice),
    }
}

/// Wraps a GPU backend so that a failed run (device lost, out of memory, a limit) is retried on the
/// CPU, as `auto` does.
pub fn with_cpu_fallback(gpu: gpu::GpuBackend, model: Arc<Model>) -> Box<dyn Backend> {
    Box::new(Fallback {
        gpu,
        model,
        cpu: OnceLock::new(),
    })
}

/// `auto` on a GPU: a failed GPU run (device lost, out of memory) is retried on the CPU.
struct Fallback {
    gpu: gpu::GpuBackend,
    model: Arc<Model>,
    cpu: OnceLock<std::result::Result<cpu::CpuBackend, String>>,
}

impl Fallback {
    fn cpu(&self, why: &str) -> Result<&cpu::CpuBackend> {
        eprintln!("prism: the GPU run failed ({why}); retrying on the CPU");
        match self
            .cpu
            .get_or_init(|| cpu::CpuBackend::new(&self.model).map_err(|e| e.to_string()))
        {
            Ok(c) => Ok(c),
            Err(e) => Err(PrismError::Backend(format!(
                "GPU failed ({why}) and the CPU backend could not start ({e})"
            ))),
        }
    }

    fn fell_back(&self) -> Option<&cpu::CpuBackend> {
        match self.cpu.get() {
            Some(Ok(c)) => Some(c),
            _ => None,
        }
    }
}

impl Backend for Fallback {
    fn describe(&self) -> String {
        match self.fell_back() {
            Some(c) => format!("{} (fell back from the GPU)", c.describe()),
            None => self.gpu.describe(),
        }
    }

    fn adapter(&self) -> Option<gpu::context::AdapterDescription> {
        self.gpu.adapter()
    }

    fn gpu_bytes(&self) -> Option<(u64, u64)> {
        self.gpu.gpu_bytes()
    }

    fn run(&self, req: &Request<'_>) -> Result<RunOutput> {
        if let Some(c) = self.fell_back() {
            return c.run(req);
        }
        match self.gpu.run(req) {
            Err(PrismError::Backend(msg)) => self.cpu(&msg)?.run(req),
            other => other,
        }
    }

    fn project(&self, x: &[f32], rows: usize, w: &crate::weights::Weight) -> Result<Vec<f32>> {
        if let Some(c) = self.fell_back() {
            return c.project(x, rows, w);
        }
        match self.gpu.project(x, rows, w) {
            Err(PrismError::Backend(msg)) => self.cpu(&msg)?.project(x, rows, w),
            other => other,
        }
    }

    fn session(&self, batch: usize, capacity: usize) -> Result<Box<dyn Session + '_>> {
        if let Some(c) = self.fell_back() {
            return c.session(batch, capacity);
        }
        match self.gpu.session(batch, capacity) {
            Err(PrismError::Backend(msg)) => self.cpu(&msg)?.session(batch, capacity),
            other => other,
        }
    }
}
