//! Which feature paths the shaders are built for (subgroup reductions, f16 weight staging): what
//! the user asked (`PRISM_GPU_MODE`, `PRISM_GPU_SUBGROUPS`), what the device has, and why a path
//! is not used, for `prism info`. Pure, so the choice is tested for devices this machine lacks.

use prism_shaders::Paths;

use crate::error::{PrismError, Result};

/// What the user asked of the feature paths, from the environment: `PRISM_GPU_MODE=exact|fast`
/// (fast: matmul weights staged as f16) and `PRISM_GPU_SUBGROUPS=on|off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRequest {
    pub subgroups: bool,
    pub fast: bool,
}

impl Default for PathRequest {
    fn default() -> Self {
        PathRequest {
            subgroups: true,
            fast: false,
        }
    }
}

impl PathRequest {
    /// The exact path without subgroups: what every adapter runs.
    pub const PLAIN: PathRequest = PathRequest {
        subgroups: false,
        fast: false,
    };

    pub fn from_env() -> Result<PathRequest> {
        let mode = std::env::var("PRISM_GPU_MODE").ok();
        let subgroups = std::env::var("PRISM_GPU_SUBGROUPS").ok();
        Self::from_values(mode.as_deref(), subgroups.as_deref())
    }

    /// The request for the values of `PRISM_GPU_MODE` and `PRISM_GPU_SUBGROUPS` (None: unset).
    pub fn from_values(mode: Option<&str>, subgroups: Option<&str>) -> Result<PathRequest> {
        let mut r = PathRequest::default();
        if let Some(v) = mode {
            r.fast = match v.trim() {
                "" | "exact" => false,
                "fast" => true,
                other => {
                    return Err(PrismError::Input(format!(
                        "PRISM_GPU_MODE={other:?}: use exact or fast"
                    )))
                }
            };
        }
        if let Some(v) = subgroups {
            r.subgroups = match v.trim() {
                "" | "on" | "1" => true,
                "off" | "0" => false,
                other => {
                    return Err(PrismError::Input(format!(
                        "PRISM_GPU_SUBGROUPS={other:?}: use on or off"
                    )))
                }
            };
        }
        Ok(r)
    }
}

/// Whether an adapter offers the cooperative-matrix shape the kernels would use: 16x16x16 with f16
/// inputs and f32 accumulation.
pub fn has_coop_16x16x16_f16(props: &[wgpu::CooperativeMatrixProperties]) -> bool {
    props.iter().any(|p| {
        (p.m_size, p.n_size, p.k_size) == (16, 16, 16)
            && p.ab_type == wgpu::CooperativeScalarType::F16
            && p.cr_type == wgpu::CooperativeScalarType::F32
    })
}

/// The paths for a device with `enabled` features (of those `available`), what was asked, and
/// whether the subgroup probe passed (None: not run); with one line per feature for `prism info`.
/// Pure, so that the choice is tested for devices this machine does not have.
pub fn choose_paths(
    available: wgpu::Features,
    enabled: wgpu::Features,
    req: PathRequest,
    subgroup_probe: Option<bool>,
    coop_16: bool,
) -> (Paths, Vec<String>) {
    let has = |f: wgpu::Features| available.contains(f);
    let on = |f: wgpu::Features| enabled.contains(f);
    let paths = Paths {
        subgroups: req.subgroups && on(wgpu::Features::SUBGROUP) && subgroup_probe == Some(true),
        f16_weights: req.fast && on(wgpu::Features::SHADER_F16),
    };
    let timestamps = match (
        has(wgpu::Features::TIMESTAMP_QUERY),
        on(wgpu::Features::TIMESTAMP_QUERY),
    ) {
        (true, true) => "used (prism bench --profile)",
        (true, false) => "available, not used",
        (false, _) => "absent",
    };
    let subgroups = if paths.subgroups {
        "used (reductions in norms, attention, logit statistics)"
    } else if !has(wgpu::Features::SUBGROUP) {
        "absent"
    } else if !req.subgroups {
        "available, not used (PRISM_GPU_SUBGROUPS=off)"
    } else if subgroup_probe == Some(false) {
        "available, not used (its subgroups are not runs of consecutive invocations, as the reductions assume)"
    } else {
        "available, not used"
    };
    let f16 = if paths.f16_weights {
        "used (fast mode: matmul weights staged as f16)"
    } else if !has(wgpu::Features::SHADER_F16) {
        if req.fast {
            "absent (PRISM_GPU_MODE=fast asked for it; running the exact mode)"
        } else {
            "absent"
        }
    } else {
        "available, not used (exact mode; PRISM_GPU_MODE=fast uses it)"
    };
    let coop = match (
        has(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX),
        coop_16,
    ) {
        (true, true) => {
            "16x16x16 f16 available, not used (Prism has no cooperative-matrix kernel yet)"
        }
        (true, false) => "available without a 16x16x16 f16 shape, not used",
        (false, _) => "absent",
    };
    let lines = vec![
        format!("timestamp queries: {timestamps}"),
        format!("subgroups: {subgroups}"),
        format!("shader f16: {f16}"),
        format!("cooperative matrix: {coop}"),
    ];
    (paths, lines)
}
