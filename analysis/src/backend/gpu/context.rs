//! The wgpu device Prism computes on: adapter choice, limits, cached pipelines, buffers, dispatches
//! and the single readback at the end of a run. The feature-path policy is in `paths.rs`, the
//! timestamp profiler in `profiler.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prism_shaders::{Paths, Shader};
use serde::Serialize;
use wgpu::util::DeviceExt;

pub use super::paths::{choose_paths, has_coop_16x16x16_f16, PathRequest};
use super::profiler::{Profiler, MAX_TIMED};
use crate::error::{PrismError, Result};

/// What the user sees about the adapter (`prism info --backend gpu`, `run --json`).
#[derive(Debug, Clone, Serialize)]
pub struct AdapterDescription {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// The adapter features Prism's kernels know of, each with whether Prism uses it and why not.
    /// A path is never chosen on a device that lacks its feature.
    pub features: Vec<String>,
}

impl AdapterDescription {
    pub fn is_software(&self) -> bool {
        self.device_type == "Cpu"
    }
}

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterDescription,
    pub limits: wgpu::Limits,
    /// The feature paths the shaders are built for on this device.
    pub paths: Paths,
    pipelines: Mutex<HashMap<Shader, Arc<wgpu::ComputePipeline>>>,
    lost: Arc<AtomicBool>,
    /// Bytes of scratch, staging and uniform buffers allocated since the last `reset_run_bytes`.
    run_bytes: AtomicU64,
    /// Bound where a shader needs a buffer that a call does not use (a matmul without bias).
    pub dummy: wgpu::Buffer,
    /// A second one, for a dispatch that leaves two bindings unused (one read, one written).
    pub dummy2: wgpu::Buffer,
    /// GPU timestamps around every dispatch, while profiling is on.
    pub(super) profiler: Mutex<Option<Profiler>>,
}

fn describe(info: &wgpu::AdapterInfo, features: Vec<String>) -> AdapterDescription {
    AdapterDescription {
        features,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
    }
}

/// Where a buffer-mapping callback leaves its result.
type MapSlot = Arc<Mutex<Option<std::result::Result<(), wgpu::BufferAsyncError>>>>;

/// Largest buffers Prism asks for, even where an adapter allows more.
const MAX_BINDING: u64 = 1 << 30;

impl GpuContext {
    /// The process's GPU device, opened once and shared by every backend and the neighbour search
    /// (software adapters only when `allow_software`).
    pub fn shared(allow_software: bool) -> Result<Arc<GpuContext>> {
        static ANY: Mutex<Option<Arc<GpuContext>>> = Mutex::new(None);
        static HARDWARE: Mutex<Option<Arc<GpuContext>>> = Mutex::new(None);
        let slot = if allow_software { &ANY } else { &HARDWARE };
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ctx) = guard.as_ref().filter(|c| !c.is_lost()) {
            return Ok(ctx.clone());
        }
        let ctx = Arc::new(GpuContext::new(allow_software)?);
        *guard = Some(ctx.clone());
        Ok(ctx)
    }

    /// Opens a headless device with the paths the environment asks for (`PathRequest::from_env`).
    /// Software adapters (llvmpipe/lavapipe) are used only when `allow_software` is set:
    /// `--backend gpu` allows them, `auto` does not.
    pub fn new(allow_software: bool) -> Result<GpuContext> {
        Self::with_paths(allow_software, PathRequest::from_env()?)
    }

    /// Opens a headless device, choosing among the paths `req` allows those the device can run.
    pub fn with_paths(allow_software: bool, req: PathRequest) -> Result<GpuContext> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let mut candidates: Vec<wgpu::Adapter> = adapters
            .into_iter()
            .filter(|a| {
                let t = a.get_info().device_type;
                allow_software || t != wgpu::DeviceType::Cpu
            })
            .collect();
        // Prefer discrete, then integrated, then anything.
        candidates.sort_by_key(|a| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        });
        let adapter = candidates.into_iter().next().ok_or_else(|| {
            PrismError::Backend(if allow_software {
                "no GPU adapter found (no Vulkan, Metal, DX12 or GL driver answered; on Debian, `apt install mesa-vulkan-drivers` gives a software one)".into()
            } else {
                "no hardware GPU adapter found".into()
            })
        })?;
        let info = adapter.get_info();
        let supported = adapter.limits();
        let mut limits = wgpu::Limits::downlevel_defaults();
        limits.max_storage_buffer_binding_size =
            supported.max_storage_buffer_binding_size.min(MAX_BINDING);
        limits.max_buffer_size = supported.max_buffer_size.min(4 * MAX_BINDING);
        limits.max_storage_buffers_per_shader_stage =
            supported.max_storage_buffers_per_shader_stage.min(8);
        limits.max_compute_workgroups_per_dimension =
            supported.max_compute_workgroups_per_dimension;
        limits.max_compute_invocations_per_workgroup =
            supported.max_compute_invocations_per_workgroup.min(256);
        limits.max_compute_workgroup_size_x = supported.max_compute_workgroup_size_x.min(256);
        limits.max_compute_workgroup_storage_size =
            supported.max_compute_workgroup_storage_size.min(16384);
        let mut wanted = wgpu::Features::TIMESTAMP_QUERY;
        if req.subgroups {
            wanted |= wgpu::Features::SUBGROUP;
        }
        if req.fast {
            wanted |= wgpu::Features::SHADER_F16;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("prism"),
            // Timestamps, where the adapter has them, for `prism bench --profile`; subgroups and
            // f16 where they are available and asked for.
            required_features: adapter.features() & wanted,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::default(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| {
            PrismError::Backend(format!(
                "the GPU adapter {:?} refused a device: {e}",
                info.name
            ))
        })?;
        let coop = adapter
            .features()
            .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
            && has_coop_16x16x16_f16(&adapter.cooperative_matrix_properties());
        let mut ctx = Self::wrap(device, queue, &info, limits);
        ctx.choose(adapter.features(), req, coop);
        Ok(ctx)
    }

    /// Chooses the paths among those the device has enabled (probing subgroups) and `req` allows,
    /// and describes them.
    fn choose(&mut self, available: wgpu::Features, req: PathRequest, coop: bool) {
        let enabled = self.device.features();
        let probe = enabled
            .contains(wgpu::Features::SUBGROUP)
            .then(|| self.probe_subgroups());
        let (paths, lines) = choose_paths(available, enabled, req, probe, coop);
        self.paths = paths;
        self.adapter.features = lines;
        // Pipelines built before (the probe's) were built for the exact path.
        self.pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Wraps a device someone else created (eframe's, in the app), on the paths its enabled
    /// features and the environment allow.
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: &wgpu::AdapterInfo,
        limits: wgpu::Limits,
    ) -> GpuContext {
        let available = device.features();
        let mut ctx = Self::wrap(device, queue, info, limits);
        let req = PathRequest::from_env().unwrap_or_default();
        ctx.choose(available, req, false);
        ctx
    }

    /// The context around a device, on the exact path until `choose` picks.
    fn wrap(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: &wgpu::AdapterInfo,
        limits: wgpu::Limits,
    ) -> GpuContext {
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        device.set_device_lost_callback(move |_reason, _msg| flag.store(true, Ordering::SeqCst));
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let dummy2 = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy 2"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        GpuContext {
            device,
            queue,
            adapter: describe(info, Vec::new()),
            limits,
            paths: Paths::default(),
            pipelines: Mutex::new(HashMap::new()),
            lost,
            run_bytes: AtomicU64::new(0),
            dummy,
            dummy2,
            profiler: Mutex::new(None),
        }
    }

    /// Runs `subgroup_probe.wgsl`: true when the device's subgroups are laid out as
    /// `reduce_subgroup.wgsl` assumes. Any failure counts as no.
    fn probe_subgroups(&self) -> bool {
        let run = || -> Result<bool> {
            let out = self.scratch("subgroup probe", 256)?;
            let mut enc = self.device.create_command_encoder(&Default::default());
            self.dispatch(
                &mut enc,
                Shader::SubgroupProbe,
                &super::ops::Params::words(&super::ops::ProbeParams { n: 256 }),
                &[&out],
                (1, 1, 1),
            )?;
            let st = self.staging("subgroup probe", 1024)?;
            enc.copy_buffer_to_buffer(&out, 0, &st, 0, None);
            let back = self.finish(enc, &[&st])?;
            Ok(u32s_from(&back[0]).iter().all(|&b| b == 0))
        };
        run().unwrap_or(false)
    }

    /// Bytes allocated for one run (scratch, staging, uniforms, uploads of inputs).
    pub fn run_bytes(&self) -> u64 {
        self.run_bytes.load(Ordering::Relaxed)
    }

    pub fn reset_run_bytes(&self) {
        self.run_bytes.store(0, Ordering::Relaxed);
    }

    fn count(&self, bytes: u64) {
        self.run_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    pub fn max_binding(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size
    }

    pub fn pipeline(&self, shader: Shader) -> Arc<wgpu::ComputePipeline> {
        let mut cache = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(shader)
            .or_insert_with(|| {
                let module = self
                    .device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader.label()),
                        source: wgpu::ShaderSource::Wgsl(shader.source_with(self.paths).into()),
                    });
                Arc::new(
                    self.device
                        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                            label: Some(shader.label()),
                            layout: None,
                            module: &module,
                            entry_point: Some("main"),
                            compilation_options: Default::default(),
                            cache: None,
                        }),
                )
            })
            .clone()
    }

    pub fn upload(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        // Zero-length buffers cannot be bound; pad to one word.
        let padded;
        let contents = if bytes.is_empty() {
            padded = [0u8; 4];
            &padded[..]
        } else {
            bytes
        };
        self.count(contents.len() as u64);
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            })
    }

    pub fn upload_f32(&self, label: &str, data: &[f32]) -> wgpu::Buffer {
        self.upload(label, &f32_bytes(data))
    }

    /// A storage buffer of `len` f32s (contents unspecified).
    pub fn scratch(&self, label: &str, len: usize) -> Result<wgpu::Buffer> {
        let size = (len.max(1) * 4) as u64;
        if size > self.max_binding() {
            return Err(PrismError::Backend(format!(
                "{label} needs {size} bytes, more than this GPU binds at once ({} bytes); use a shorter text",
                self.max_binding()
            )));
        }
        Ok(self.storage(label, size))
    }

    /// A storage buffer of `size` bytes that copies can go to and from, counted in the run's bytes.
    fn storage(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.count(size);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer of `len` f32s that may exceed one binding (copy targets: captures, caches).
    pub fn buffer(&self, label: &str, len: usize) -> Result<wgpu::Buffer> {
        let size = (len.max(1) * 4) as u64;
        if size > self.limits.max_buffer_size {
            return Err(PrismError::Backend(format!(
                "{label} needs {size} bytes, more than this GPU allows in one buffer ({} bytes); capture less or use a shorter text",
                self.limits.max_buffer_size
            )));
        }
        Ok(self.storage(label, size))
    }

    /// A host-readable buffer that copies land in before the one readback.
    pub fn staging(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
        if bytes > self.limits.max_buffer_size {
            return Err(PrismError::Backend(format!(
                "reading back {label} needs {bytes} bytes, more than this GPU allows in one buffer; capture less or use a shorter text"
            )));
        }
        self.count(bytes.max(4));
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// Records one dispatch: binding 0 is the uniform `params`, bindings 1.. are `buffers`.
    /// A buffer larger than one binding, or a grid beyond the adapter's limits, is refused here
    /// with a message rather than by the driver.
    pub fn dispatch(
        &self,
        enc: &mut wgpu::CommandEncoder,
        shader: Shader,
        params: &[u32],
        buffers: &[&wgpu::Buffer],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        if let Some(b) = buffers.iter().find(|b| b.size() > self.max_binding()) {
            return Err(PrismError::Backend(format!(
                "{}: a {}-byte buffer is more than this GPU binds at once ({} bytes); use a shorter text or capture less",
                shader.file_name(),
                b.size(),
                self.max_binding()
            )));
        }
        let max = self.limits.max_compute_workgroups_per_dimension;
        if groups.0 > max || groups.1 > max || groups.2 > max {
            return Err(PrismError::Backend(format!(
                "{}: a grid of {groups:?} workgroups exceeds this GPU's limit of {max} per dimension; use a shorter text",
                shader.file_name()
            )));
        }
        if groups.0 == 0 || groups.1 == 0 || groups.2 == 0 {
            return Ok(());
        }
        let pipeline = self.pipeline(shader);
        let mut words = params.to_vec();
        while !words.len().is_multiple_of(4) {
            words.push(0);
        }
        let uniform = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: &u32_bytes(&words),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.as_entire_binding(),
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(shader.label()),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut profiler = self.profiler.lock().unwrap_or_else(|e| e.into_inner());
        let timestamp_writes = match profiler.as_mut() {
            Some(p) if (p.pending.len() as u32) < MAX_TIMED => {
                let i = p.pending.len() as u32;
                p.pending.push(shader.label());
                Some(wgpu::ComputePassTimestampWrites {
                    query_set: &p.set,
                    beginning_of_pass_write_index: Some(2 * i),
                    end_of_pass_write_index: Some(2 * i + 1),
                })
            }
            Some(p) => {
                p.untimed += 1;
                None
            }
            None => None,
        };
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(shader.label()),
            timestamp_writes,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        Ok(())
    }

    /// Workgroup counts for `n` items in groups of `per_group`, split over x and y so that no
    /// dimension exceeds the adapter's limit.
    pub fn linear_groups(&self, n: usize, per_group: usize) -> (u32, u32, u32) {
        let groups = n.div_ceil(per_group).max(1) as u64;
        let max = self.limits.max_compute_workgroups_per_dimension.max(1) as u64;
        if groups <= max {
            (groups as u32, 1, 1)
        } else {
            // Shaders compute the index as gid.y * (num_workgroups.x * per_group) + gid.x.
            (max as u32, groups.div_ceil(max) as u32, 1)
        }
    }

    /// Submits `enc`, waits, and reads every staging buffer back: the one readback of a run.
    pub fn finish(
        &self,
        mut enc: wgpu::CommandEncoder,
        staging: &[&wgpu::Buffer],
    ) -> Result<Vec<Vec<u8>>> {
        // With profiling on, the run's timestamps come back with the same readback.
        let timed = self.resolve_timestamps(&mut enc);
        let mut all: Vec<&wgpu::Buffer> = staging.to_vec();
        if let Some((buf, _)) = &timed {
            all.push(buf);
        }
        let mut out = self.submit_and_read(enc, &all)?;
        if let Some((_, labels)) = timed {
            if let Some(bytes) = out.pop() {
                self.add_timestamps(&labels, &bytes);
            }
        }
        Ok(out)
    }

    /// Submits `enc`, waits, and reads every staging buffer back.
    fn submit_and_read(
        &self,
        enc: wgpu::CommandEncoder,
        staging: &[&wgpu::Buffer],
    ) -> Result<Vec<Vec<u8>>> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        self.queue.submit(Some(enc.finish()));
        let results: Vec<MapSlot> = staging.iter().map(|_| Arc::new(Mutex::new(None))).collect();
        for (b, slot) in staging.iter().zip(&results) {
            let slot = slot.clone();
            b.map_async(wgpu::MapMode::Read, .., move |r| {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
        let mut poll = self.device.poll(wgpu::PollType::wait_indefinitely());
        // Another thread polling the same device may be the one that runs our callbacks, a moment
        // after our own poll returned: wait for them, briefly.
        let started = std::time::Instant::now();
        while poll.is_ok()
            && results
                .iter()
                .any(|r| r.lock().map(|g| g.is_none()).unwrap_or(false))
        {
            if started.elapsed() > std::time::Duration::from_secs(30) || self.is_lost() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            poll = self.device.poll(wgpu::PollType::wait_indefinitely());
        }
        let validation_error = pollster::block_on(validation.pop());
        let oom_error = pollster::block_on(oom.pop());
        if let Some(e) = oom_error {
            return Err(PrismError::Backend(format!(
                "the GPU ran out of memory: {e}"
            )));
        }
        if let Some(e) = validation_error {
            return Err(PrismError::Backend(format!(
                "GPU validation error (a bug in Prism): {e}"
            )));
        }
        if self.is_lost() {
            return Err(PrismError::Backend(
                "the GPU device was lost during the run".into(),
            ));
        }
        poll.map_err(|e| PrismError::Backend(format!("waiting for the GPU failed: {e}")))?;
        let mut out = Vec::with_capacity(staging.len());
        for (b, slot) in staging.iter().zip(&results) {
            match slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    return Err(PrismError::Backend(format!(
                        "reading back from the GPU failed: {e}"
                    )))
                }
                None => {
                    return Err(PrismError::Backend(
                        "the GPU never answered the readback".into(),
                    ))
                }
            }
            let view = b.get_mapped_range(..).map_err(|e| {
                PrismError::Backend(format!("reading back from the GPU failed: {e:?}"))
            })?;
            out.push(view.to_vec());
            drop(view);
            b.unmap();
        }
        Ok(out)
    }
}

pub fn f32_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn u32_bytes(data: &[u32]) -> Vec<u8> {
    data.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn f32s_from(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn u32s_from(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
