//! Nothing lost: a figure export killed at any moment leaves either the previous file or the new
//! one, complete, and never a truncated file.

use std::process::{Command, Stdio};
use std::time::Duration;

use prism_tests::synth::Rng;
use prism_tests::*;

fn png_is_complete(path: &std::path::Path) -> bool {
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let decoder = png::Decoder::new(std::io::BufReader::new(f));
    let Ok(mut reader) = decoder.read_info() else {
        return false;
    };
    let mut buf = vec![0; reader.output_buffer_size()];
    reader.next_frame(&mut buf).is_ok()
}

#[test]
fn killing_an_export_mid_write_never_leaves_a_truncated_file() {
    let dir = TempDir::new("atomic");
    let out = dir.path().join("fig.png");
    let gguf = tiny("llama-gguf/tiny-llama-f32.gguf");
    let args = |o: &std::path::Path| -> Vec<String> {
        [
            "similar",
            gguf.to_str().unwrap(),
            "ab",
            "cd",
            "ef",
            "gh",
            "--backend",
            "cpu",
            "--figure",
            o.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // A first, complete export.
    let status = Command::new(prism_bin())
        .args(args(&out))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(png_is_complete(&out));
    let mut rng = Rng::new(7);
    let mut killed = 0;
    for _ in 0..25 {
        let mut child = Command::new(prism_bin())
            .args(args(&out))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.next_u64() % 250_000));
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill();
            killed += 1;
        }
        let _ = child.wait();
        assert!(
            png_is_complete(&out),
            "after a kill the figure is still a complete PNG"
        );
        let csv = std::fs::read_to_string(out.with_extension("csv")).unwrap();
        assert!(
            csv.ends_with('\n') && csv.lines().count() == 5,
            "the data file is complete: {csv:?}"
        );
    }
    assert!(killed > 0, "some runs were killed mid-way");
}
