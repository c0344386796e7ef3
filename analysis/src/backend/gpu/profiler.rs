//! GPU time per shader for `prism bench --profile`: timestamp queries around each dispatch of a
//! run (`TIMESTAMP_QUERY`), resolved with the run's readback and summed per shader.

use std::collections::HashMap;

use super::context::GpuContext;

/// Timestamp queries around each dispatch of a run (`TIMESTAMP_QUERY`), summed per shader.
pub(super) struct Profiler {
    pub(super) set: wgpu::QuerySet,
    /// The shader of each timed dispatch of the current run, in order.
    pub(super) pending: Vec<&'static str>,
    /// Dispatches beyond the query set's capacity in the current run (not timed).
    pub(super) untimed: usize,
    /// Per shader: total nanoseconds and dispatches, since the last `take_profile`.
    pub(super) totals: HashMap<&'static str, (f64, usize)>,
    pub(super) untimed_total: usize,
}

/// Two timestamps per dispatch.
pub(super) const MAX_TIMED: u32 = wgpu::QUERY_SET_MAX_QUERIES / 2;

impl GpuContext {
    /// Starts (or stops) timing every dispatch on the GPU. Returns false when the device has no
    /// timestamp queries, and then nothing is timed.
    pub fn set_profiling(&self, on: bool) -> bool {
        let mut p = self.profiler.lock().unwrap_or_else(|e| e.into_inner());
        if !on {
            *p = None;
            return true;
        }
        if !self
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            *p = None;
            return false;
        }
        if p.is_none() {
            *p = Some(Profiler {
                set: self.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("prism-profile"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * MAX_TIMED,
                }),
                pending: Vec::new(),
                untimed: 0,
                totals: HashMap::new(),
                untimed_total: 0,
            });
        }
        true
    }

    /// GPU milliseconds and dispatches per shader since the last call (slowest first), plus a
    /// line for dispatches that went untimed because a run had more than the query set holds.
    pub fn take_profile(&self) -> Vec<(String, f64, usize)> {
        let mut p = self.profiler.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = p.as_mut() else {
            return Vec::new();
        };
        let mut out: Vec<(String, f64, usize)> = p
            .totals
            .drain()
            .map(|(k, (ns, n))| (k.trim_end_matches(".wgsl").to_string(), ns / 1e6, n))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        if p.untimed_total > 0 {
            out.push(("(untimed)".into(), 0.0, p.untimed_total));
            p.untimed_total = 0;
        }
        out
    }

    /// Resolves the current run's timestamps into a readable buffer, if profiling.
    pub(super) fn resolve_timestamps(
        &self,
        enc: &mut wgpu::CommandEncoder,
    ) -> Option<(wgpu::Buffer, Vec<&'static str>)> {
        let mut guard = self.profiler.lock().unwrap_or_else(|e| e.into_inner());
        let p = guard.as_mut()?;
        p.untimed_total += std::mem::take(&mut p.untimed);
        let labels = std::mem::take(&mut p.pending);
        if labels.is_empty() {
            return None;
        }
        let n = 2 * labels.len() as u32;
        let bytes = n as u64 * wgpu::QUERY_SIZE as u64;
        let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps-read"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        enc.resolve_query_set(&p.set, 0..n, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &read, 0, bytes);
        Some((read, labels))
    }

    pub(super) fn add_timestamps(&self, labels: &[&'static str], bytes: &[u8]) {
        let period = self.queue.get_timestamp_period() as f64;
        let ticks: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let mut guard = self.profiler.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = guard.as_mut() else { return };
        for (i, label) in labels.iter().enumerate() {
            let (a, b) = (ticks.get(2 * i), ticks.get(2 * i + 1));
            if let (Some(&a), Some(&b)) = (a, b) {
                let e = p.totals.entry(label).or_insert((0.0, 0));
                e.0 += b.saturating_sub(a) as f64 * period;
                e.1 += 1;
            }
        }
    }
}
