//! Every shader must parse and validate with naga, so a broken shader fails `cargo test` even
//! when no test runs it on a GPU.

use prism_shaders::{Paths, Shader};

#[test]
fn every_shader_validates_on_every_path() {
    for &shader in Shader::ALL {
        for paths in Paths::ALL {
            if paths.subgroups || !shader.needs_subgroups() {
                validate(shader, paths);
            }
        }
    }
}

#[test]
fn paths_change_only_the_shaders_that_use_them() {
    let subgroups = Paths {
        subgroups: true,
        ..Paths::default()
    };
    let f16 = Paths {
        f16_weights: true,
        ..Paths::default()
    };
    for &shader in Shader::ALL {
        let exact = shader.source();
        assert_eq!(
            exact != shader.source_with(subgroups),
            shader.uses_subgroups()
        );
        assert_eq!(exact != shader.source_with(f16), shader.uses_f16());
    }
    assert!(Shader::Attention
        .source_with(subgroups)
        .contains("subgroupAdd"));
    assert!(Shader::Matmul.source_with(f16).starts_with("enable f16;"));
}

fn validate(shader: Shader, paths: Paths) {
    {
        let source = shader.source_with(paths);
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", shader.file_name(), e.emit_to_string(&source)));
        // Only what the path asks for: the exact path must validate without any capability.
        let mut caps = naga::valid::Capabilities::empty();
        if paths.subgroups {
            caps |= naga::valid::Capabilities::SUBGROUP;
        }
        if paths.f16_weights {
            caps |= naga::valid::Capabilities::SHADER_FLOAT16;
        }
        let mut validator = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
        validator.subgroup_stages(naga::valid::ShaderStages::COMPUTE);
        validator.subgroup_operations(naga::valid::SubgroupOperationSet::all());
        validator.validate(&module).unwrap_or_else(|e| {
            panic!(
                "{} {paths:?}: {}",
                shader.file_name(),
                e.emit_to_string(&source)
            )
        });
        assert!(
            module.entry_points.iter().any(|e| e.name == "main"),
            "{} has a `main` entry point",
            shader.file_name()
        );
    }
}

#[test]
fn every_file_is_registered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("wgsl");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut registered: Vec<String> = Shader::ALL
        .iter()
        .map(|s| s.file_name().to_string())
        .chain(Shader::LIBRARIES.iter().map(|s| s.to_string()))
        .collect();
    registered.sort();
    // Variants of one file (the matmul's tile sizes) share it.
    registered.dedup();
    assert_eq!(files, registered);
}

#[test]
fn a_broken_shader_is_caught() {
    // The validation above must be able to fail.
    let broken = "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }";
    let module = naga::front::wgsl::parse_str(broken);
    let failed = match module {
        Err(_) => true,
        Ok(m) => naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&m)
        .is_err(),
    };
    assert!(failed);
}

#[test]
fn the_matmul_tiles_have_their_workgroup_sizes() {
    for (shader, threads) in [(Shader::Matmul, 256), (Shader::MatmulSmall, 64)] {
        let module = naga::front::wgsl::parse_str(&shader.source()).unwrap();
        let main = module
            .entry_points
            .iter()
            .find(|e| e.name == "main")
            .unwrap();
        assert_eq!(main.workgroup_size, [threads, 1, 1], "{shader:?}");
    }
}
