//! `prism batch`: a corpus made here (SmolLM2's tokenizer) to Parquet shards. Every value in the
//! shards equals `prism run --json` on the same document; a run killed with SIGKILL and resumed
//! gives byte-identical shards to an uninterrupted one; a corrupt shard or manifest, and a changed
//! setting, are refused naming what is wrong; `--summary` adds the shards up.

use std::path::Path;

use prism_analysis::batch;
use prism_tests::synth::Rng;
use prism_tests::*;

const WORDS: &[&str] = &[
    "the", "cat", "sat", "on", "a", "mat", "while", "rain", "fell", "over", "quiet", "town", "and",
    "children", "laughed", "at", "purple", "clouds", "near", "blue", "river", "red", "stones",
    "of", "old", "bridge", "42", "times", "every", "morning",
];

/// 160 documents of 3 to 15 words, and three of 90 (longer than the context of 64 tokens).
fn corpus(dir: &Path) -> (std::path::PathBuf, Vec<String>) {
    let mut rng = Rng::new(77);
    let mut docs: Vec<String> = (0..160)
        .map(|_| {
            let n = 3 + (rng.next_u64() % 13) as usize;
            (0..n)
                .map(|_| WORDS[(rng.next_u64() % WORDS.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    for i in [5, 70, 150] {
        docs[i] = (0..90)
            .map(|j| WORDS[j % WORDS.len()])
            .collect::<Vec<_>>()
            .join(" ");
    }
    let path = dir.join("corpus.txt");
    std::fs::write(&path, docs.join("\n")).unwrap();
    (path, docs)
}

fn batch_args<'a>(model: &'a str, corpus: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "batch",
        model,
        "--corpus",
        corpus,
        "--out",
        out,
        "--shard-docs",
        "20",
        "--context",
        "64",
        "--backend",
        "cpu",
    ]
}

fn refused(args: &[&str], needle: &str) {
    let out = prism(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "prism {args:?}: {err}");
    assert!(err.contains(needle), "prism {args:?}: {err}");
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn corpus_to_parquet_equals_prism_run_resumes_after_a_kill_and_refuses_corruption() {
    let model = sample("smollm2");
    let model = model.to_str().unwrap();
    let tmp = TempDir::new("batch");
    let (corpus_path, docs) = corpus(tmp.path());
    let c = corpus_path.to_str().unwrap();
    let a = tmp.path().join("a");
    let out = prism(&batch_args(model, c, a.to_str().unwrap()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every value of some documents (one per shard region, a truncated one) against prism run.
    let tokens = batch::tokens(&a).expect("token rows");
    let summary = batch::summary(&a).expect("summary");
    assert_eq!(summary.docs.len(), docs.len());
    assert_eq!(summary.manifest.shards.len(), 8);
    for doc in [0usize, 1, 44, 99, 159] {
        let want = json_of(&[
            "run",
            model,
            "--text",
            &docs[doc],
            "--json",
            "--backend",
            "cpu",
        ]);
        let rows: Vec<&batch::TokenRow> = tokens.iter().filter(|t| t.doc == doc).collect();
        let ids = want["tokens"].as_array().unwrap();
        assert_eq!(rows.len(), ids.len(), "doc {doc}: tokens");
        for (p, r) in rows.iter().enumerate() {
            assert_eq!(r.position, p);
            assert_eq!(
                r.id as u64,
                ids[p]["id"].as_u64().unwrap(),
                "doc {doc} position {p}: id"
            );
            // Equal up to the JSON text's last digit (serde_json reads floats to within an ulp).
            let same = |got: Option<f64>, v: &serde_json::Value| match (got, v.as_f64()) {
                (Some(g), Some(w)) => (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                (None, None) => true,
                _ => false,
            };
            assert!(
                same(r.surprisal_bits, &want["surprisal_bits"][p]),
                "doc {doc} position {p}: surprisal {:?}",
                r.surprisal_bits
            );
            assert!(
                same(r.entropy_bits, &want["entropy_bits"][p]),
                "doc {doc} position {p}: entropy {:?}",
                r.entropy_bits
            );
            assert_eq!(
                r.rank.map(|x| x as u64),
                want["rank"][p].as_u64(),
                "doc {doc} position {p}: rank"
            );
            for (j, (id, prob)) in r.top.iter().enumerate() {
                let t = &want["top"][p][j];
                assert_eq!(
                    *id as u64,
                    t["id"].as_u64().unwrap(),
                    "doc {doc} position {p}: top {j}"
                );
                assert!(
                    (prob - t["p"].as_f64().unwrap()).abs() < 1e-7,
                    "doc {doc} position {p}: top {j} p"
                );
            }
        }
        let d = &summary.docs[doc];
        assert_eq!(d.doc, doc);
        assert_eq!(d.text, docs[doc]);
        assert!(!d.truncated);
        assert!(
            (d.bits - want["total_bits"].as_f64().unwrap()).abs() < 1e-9,
            "doc {doc}: bits"
        );
        assert!((d.bits_per_byte - want["bits_per_byte"].as_f64().unwrap()).abs() < 1e-12);
        assert_eq!(
            d.zstd_bytes as u64,
            want["zstd_bytes"].as_u64().unwrap(),
            "doc {doc}: zstd"
        );
    }
    for doc in [5, 70, 150] {
        let d = &summary.docs[doc];
        assert!(
            d.truncated && d.tokens == 64,
            "doc {doc}: {} tokens",
            d.tokens
        );
    }
    let total: f64 = summary.docs.iter().map(|d| d.bits).sum();
    assert!((summary.total_bits - total).abs() < 1e-6);
    let s = json_of(&["batch", "--summary", a.to_str().unwrap(), "--json"]);
    assert_eq!(s["docs"].as_array().unwrap().len(), docs.len());
    assert!((s["bits_per_byte"].as_f64().unwrap() - summary.bits_per_byte).abs() < 1e-12);
    assert!(s["zstd_bits_per_byte"].as_f64().unwrap() > 0.0);

    // Killed (SIGKILL) after its first shard, then resumed: the same bytes as run 'a'.
    let b = tmp.path().join("b");
    let mut child = std::process::Command::new(prism_bin())
        .args(batch_args(model, c, b.to_str().unwrap()))
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let done_at_kill = loop {
        let shards = batch::verify(&b).map(|m| m.shards.len()).unwrap_or(0);
        if shards >= 1 {
            child.kill().unwrap();
            child.wait().unwrap();
            break batch::verify(&b).unwrap().shards.len();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the batch run ended before its first shard"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(done_at_kill < 8, "the run finished before it was killed");
    let out = prism(&batch_args(model, c, b.to_str().unwrap()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.len(), fb.len());
    for ((na, ba), (nb, bb)) in fa.iter().zip(&fb) {
        assert_eq!(na, nb);
        assert!(
            ba == bb,
            "{na} differs between the uninterrupted and the resumed run"
        );
    }

    // A changed setting, a corrupt shard, a corrupt manifest: refused, named.
    let mut args = batch_args(model, c, a.to_str().unwrap());
    args[9] = "32";
    refused(&args, "the settings differ");
    let shard = b.join("tokens-00003.parquet");
    let mut bytes = std::fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&shard, bytes).unwrap();
    refused(
        &batch_args(model, c, b.to_str().unwrap()),
        "shard 3 does not match",
    );
    refused(
        &["batch", "--summary", b.to_str().unwrap()],
        "shard 3 does not match",
    );
    std::fs::write(b.join("manifest.json"), "{\"format\": 1, \"shards\": [").unwrap();
    refused(
        &["batch", "--summary", b.to_str().unwrap()],
        "manifest is corrupt",
    );
    // A Parquet corpus: the texts of a docs shard (its `text` column) are those documents.
    let pq = tmp.path().join("c.parquet");
    std::fs::copy(a.join("docs-00001.parquet"), &pq).unwrap();
    let corpus = prism_analysis::corpus::Corpus::read(&pq).expect("a Parquet corpus");
    assert_eq!(corpus.documents, docs[20..40].to_vec());
    // Hostile Parquet corpora: truncated at every length class and with flipped bytes, each is
    // read or refused with the file named, never a panic.
    prism_analysis::guard::install_quiet_hook_for_guarded();
    let good = std::fs::read(&pq).unwrap();
    let mut rng = Rng::new(20);
    let mut refusals = 0;
    for trial in 0..120 {
        let mut b = good.clone();
        if trial % 3 == 0 {
            b.truncate((rng.next_u64() % good.len() as u64) as usize);
        } else {
            for _ in 0..1 + trial % 4 {
                let i = (rng.next_u64() % b.len() as u64) as usize;
                b[i] ^= 1 << (rng.next_u64() % 8);
            }
        }
        let bad = tmp.path().join("hostile.parquet");
        std::fs::write(&bad, &b).unwrap();
        match prism_analysis::corpus::Corpus::read(&bad) {
            Ok(c) => assert!(c.documents.len() <= 20),
            Err(e) => {
                refusals += 1;
                assert!(e.to_string().contains("hostile.parquet"), "{e}");
            }
        }
    }
    assert!(
        refusals >= 40,
        "only {refusals} of 120 broken files refused"
    );
    // A folder that is not a batch folder.
    refused(
        &batch_args(model, c, tmp.path().to_str().unwrap()),
        "not a batch folder",
    );
}
