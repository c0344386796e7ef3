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

/// `batch::pack` against SAELens's own `concat_and_batch_sequences` (tests/fixtures/pack, made
/// by scripts/make_pack_reference.py): the same full windows, token for token; the tail SAELens
/// drops is the one shorter window after them; every document token is in exactly one window,
/// in order, at the position its owner entry names.
#[test]
fn packing_gives_the_windows_sae_lens_concatenation_gives() {
    let r = read_json(&fixtures().join("pack").join("sae_lens.json"));
    let cases = r["cases"].as_array().unwrap();
    assert!(cases.len() >= 50);
    for (i, c) in cases.iter().enumerate() {
        let ctx = c["context"].as_u64().unwrap() as usize;
        let bos = c["bos"].as_u64().map(|b| b as u32);
        let docs: Vec<Vec<u32>> = c["docs"].as_array().unwrap().iter().map(u32s).collect();
        let want: Vec<Vec<u32>> = c["windows"].as_array().unwrap().iter().map(u32s).collect();
        let got = batch::pack(&docs, ctx, bos);
        let full: Vec<Vec<u32>> = got
            .iter()
            .filter(|w| w.ids.len() == ctx)
            .map(|w| w.ids.clone())
            .collect();
        assert_eq!(full, want, "case {i}: windows");
        assert!(
            got.iter().rev().skip(1).all(|w| w.ids.len() == ctx),
            "case {i}: only the last window may be shorter"
        );
        let mut seen: Vec<(usize, usize)> = Vec::new();
        for w in &got {
            for (p, o) in w.owner.iter().enumerate() {
                match o {
                    Some((d, pos)) => {
                        assert_eq!(w.ids[p], docs[*d][*pos], "case {i}: owner");
                        seen.push((*d, *pos));
                    }
                    None => assert_eq!(Some(w.ids[p]), bos, "case {i}: inserted token"),
                }
            }
        }
        let all: Vec<(usize, usize)> = docs
            .iter()
            .enumerate()
            .flat_map(|(d, t)| (0..t.len()).map(move |p| (d, p)))
            .collect();
        assert_eq!(seen, all, "case {i}: every token once, in order");
    }
}

/// The schema and record batches of an Arrow IPC stream file.
fn arrow_stream(path: &Path) -> (arrow_schema::SchemaRef, Vec<arrow_array::RecordBatch>) {
    let f = std::fs::File::open(path).unwrap();
    let r = arrow_ipc::reader::StreamReader::try_new(f, None).unwrap();
    let schema = r.schema();
    (schema, r.map(|b| b.unwrap()).collect())
}

/// Row `row` of a `datasets` Array2D column (list<list<float>>) as f32 values, row-major.
fn array2d_row(col: &dyn arrow_array::Array, row: usize) -> Vec<f32> {
    use arrow_array::cast::AsArray;
    use arrow_array::Array;
    let outer = col.as_list::<i32>().value(row);
    let inner = outer.as_list::<i32>();
    let mut v = Vec::new();
    for i in 0..inner.len() {
        let x = inner.value(i);
        match x.data_type() {
            arrow_schema::DataType::Float32 => v.extend(
                x.as_primitive::<arrow_array::types::Float32Type>()
                    .values()
                    .iter(),
            ),
            arrow_schema::DataType::Float16 => v.extend(
                x.as_primitive::<arrow_array::types::Float16Type>()
                    .values()
                    .iter()
                    .map(|h| h.to_f32()),
            ),
            t => panic!("an Array2D of {t}"),
        }
    }
    v
}

/// `prism batch --pack --sites ... --sae ...` on the tiny Qwen3 fixture: the activation cache
/// is a `datasets` folder in SAELens's layout (Array2D(context, d_in) per hook, token_ids, the
/// Features in the schema and in dataset_info.json, state.json listing every shard's file), its
/// rows are the full packed windows and hold exactly what a fresh run of those ids captures;
/// f16 holds those values rounded; every token row and feature row equals a fresh run's at the
/// token's window and position; bad sites and a changed site list are refused.
#[test]
fn packed_batch_writes_a_sae_lens_activation_cache_and_sparse_features() {
    use arrow_array::cast::AsArray;
    use prism_analysis::backend::{cpu::CpuBackend, Capture};
    use prism_analysis::intervene::Site;
    use prism_analysis::sae::{self, Sae};
    let model_dir = fixtures().join("archs").join("qwen3");
    let sae_dir = fixtures().join("saes").join("relu-resid-pre-1");
    let tmp = TempDir::new("batch-pack");
    let mut rng = Rng::new(31);
    let docs: Vec<String> = (0..13)
        .map(|i| {
            let n = if i == 4 {
                40
            } else {
                1 + (rng.next_u64() % 9) as usize
            };
            (0..n)
                .map(|_| WORDS[(rng.next_u64() % WORDS.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let corpus = tmp.path().join("corpus.txt");
    std::fs::write(&corpus, docs.join("\n")).unwrap();
    let args = |out: &str, dtype: &'static str, sites: &'static str| -> Vec<String> {
        [
            "batch",
            model_dir.to_str().unwrap(),
            "--corpus",
            corpus.to_str().unwrap(),
            "--out",
            out,
            "--shard-docs",
            "5",
            "--context",
            "16",
            "--top",
            "3",
            "--pack",
            "--bos",
            "--sites",
            sites,
            "--dtype",
            dtype,
            "--sae",
            sae_dir.to_str().unwrap(),
            // Several windows per pass: each must still equal its own fresh run below.
            "--windows-per-pass",
            "3",
            "--backend",
            "cpu",
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |a: &[String]| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        prism(&a)
    };
    let a = tmp.path().join("a");
    let out = run(&args(a.to_str().unwrap(), "f32", "resid_post@1,mlp_out@0"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("activation cache"));

    let m = batch::verify(&a).expect("a checked folder");
    assert_eq!(m.shards.len(), 3);
    let layout = m.activations.clone().expect("the cache's layout");
    let hooks: Vec<&str> = layout.hooks.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(hooks, ["blocks.1.hook_resid_post", "blocks.0.hook_mlp_out"]);
    let model = load(&model_dir);
    let d_in = model.spec.hidden;
    assert!(layout.hooks.iter().all(|(_, w)| *w == d_in));
    let backend = CpuBackend::new(&model).unwrap();
    let sae = Sae::load(&sae_dir).unwrap();
    let capture = Capture {
        residual: true,
        sites: true,
        top_k: 3,
        ..Capture::default()
    };
    let fresh =
        |ids: &[u32]| prism_analysis::trace::Trace::run(&model, &backend, ids, capture, 3).unwrap();

    // The datasets folder.
    let dir = a.join("activations");
    let state = read_json(&dir.join("state.json"));
    let files: Vec<&str> = state["_data_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        ["data-00000.arrow", "data-00001.arrow", "data-00002.arrow"]
    );
    let info = read_json(&dir.join("dataset_info.json"));
    assert_eq!(
        info["features"]["blocks.1.hook_resid_post"]["_type"],
        "Array2D"
    );
    assert_eq!(
        info["features"]["blocks.1.hook_resid_post"]["shape"],
        serde_json::json!([16, d_in])
    );
    assert_eq!(info["features"]["token_ids"]["length"], 16);

    // Every cached row against a fresh run of its ids; the windows are the packing's.
    let tok = model.tokenizer.as_ref().unwrap();
    let bos = tok.bos_id;
    let mut rows_total = 0;
    for (si, s) in m.shards.iter().enumerate() {
        let (schema, batches) = arrow_stream(&a.join(s.activations_file.as_ref().unwrap()));
        let meta: serde_json::Value =
            serde_json::from_str(&schema.metadata()["huggingface"]).unwrap();
        assert_eq!(meta["info"]["features"], info["features"]);
        assert_eq!(
            schema.field(0).metadata()["ARROW:extension:name"],
            "datasets.features.features.Array2DExtensionType"
        );
        let streams: Vec<Vec<u32>> = docs[s.first_doc..s.first_doc + s.docs]
            .iter()
            .map(|t| {
                let mut ids = tok.encode(t, true).unwrap();
                if ids.first() == bos.as_ref() {
                    ids.remove(0);
                }
                ids
            })
            .collect();
        let windows = batch::pack(&streams, 16, bos);
        let full: Vec<&batch::Window> = windows.iter().filter(|w| w.ids.len() == 16).collect();
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(n, full.len(), "shard {si}: rows");
        assert_eq!(s.activation_rows, Some(n));
        rows_total += n;
        let mut row = 0;
        for b in &batches {
            for r in 0..b.num_rows() {
                let ids: Vec<u32> = b
                    .column(2)
                    .as_fixed_size_list()
                    .value(r)
                    .as_primitive::<arrow_array::types::Int32Type>()
                    .values()
                    .iter()
                    .map(|&i| i as u32)
                    .collect();
                assert_eq!(ids, full[row].ids, "shard {si} row {row}: token_ids");
                let t = fresh(&ids);
                assert_eq!(
                    array2d_row(b.column(0).as_ref(), r),
                    t.site_values(Site::ResidPost, 1).unwrap(),
                    "shard {si} row {row}: resid_post@1"
                );
                assert_eq!(
                    array2d_row(b.column(1).as_ref(), r),
                    t.site_values(Site::MlpOut, 0).unwrap(),
                    "shard {si} row {row}: mlp_out@0"
                );
                row += 1;
            }
        }
        // Token rows and features at each token's window and position.
        let tokens = batch::tokens(&a).unwrap();
        let feats = batch::features(&a).unwrap();
        for (wi, w) in windows.iter().enumerate() {
            let t = fresh(&w.ids);
            let f = sae::active_features(&backend, &t, &sae).unwrap();
            for (p, o) in w.owner.iter().enumerate() {
                let Some((d, pos)) = *o else { continue };
                let doc = s.first_doc + d;
                let r = tokens
                    .iter()
                    .find(|r| r.doc == doc && r.position == pos)
                    .unwrap_or_else(|| panic!("doc {doc} position {pos}: no token row"));
                assert_eq!(r.id, w.ids[p]);
                assert_eq!(
                    r.surprisal_bits, t.surprisal_bits[p],
                    "window {wi} position {p}"
                );
                assert_eq!(r.rank, t.rank[p]);
                let got: Vec<(usize, f32)> = feats
                    .iter()
                    .filter(|x| x.doc == doc && x.position == pos)
                    .map(|x| (x.feature, x.activation))
                    .collect();
                assert_eq!(got, f[p], "doc {doc} position {pos}: features");
                assert!(!got.is_empty(), "a ReLU SAE with no active feature");
            }
        }
    }
    assert!(rows_total >= 3, "{rows_total} rows");
    // Documents' totals are their tokens' bits (BOS separators are no document's).
    let summary = batch::summary(&a).unwrap();
    let tokens = batch::tokens(&a).unwrap();
    for d in &summary.docs {
        let bits: f64 = tokens
            .iter()
            .filter(|t| t.doc == d.doc)
            .filter_map(|t| t.surprisal_bits)
            .sum();
        assert!((d.bits - bits).abs() < 1e-9, "doc {}", d.doc);
        assert!(!d.truncated);
    }

    // f16: the same windows, each value the f32 one rounded to half precision.
    let h = tmp.path().join("h");
    let out = run(&args(h.to_str().unwrap(), "f16", "resid_post@1,mlp_out@0"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, b32) = arrow_stream(&a.join("activations/data-00001.arrow"));
    let (_, b16) = arrow_stream(&h.join("activations/data-00001.arrow"));
    let v32 = array2d_row(b32[0].column(0).as_ref(), 0);
    let v16 = array2d_row(b16[0].column(0).as_ref(), 0);
    assert_eq!(
        v16,
        v32.iter()
            .map(|&x| half::f16::from_f32(x).to_f32())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        read_json(&h.join("activations/dataset_info.json"))["features"]["blocks.0.hook_mlp_out"]
            ["dtype"],
        "float16"
    );

    // Refusals: a changed site list, sites without --pack, unknown sites and layers.
    refused(
        &args(a.to_str().unwrap(), "f32", "resid_post@1")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        "differ",
    );
    let c = tmp.path().join("c");
    let mut no_pack = args(c.to_str().unwrap(), "f32", "resid_post@1");
    no_pack.retain(|x| x != "--pack");
    let no_pack: Vec<&str> = no_pack.iter().map(String::as_str).collect();
    refused(&no_pack, "--pack");
    let mut no_sites = args(c.to_str().unwrap(), "f16", "resid_post@1");
    let at = no_sites.iter().position(|x| x == "--sites").unwrap();
    no_sites.drain(at..at + 2);
    let no_sites: Vec<&str> = no_sites.iter().map(String::as_str).collect();
    refused(&no_sites, "give --sites too");
    for (sites, needle) in [
        ("resid_post@99", "layers 0.."),
        ("nowhere@1", "expected site@layer"),
        ("expert@1", "holds no activation"),
        ("resid_post@1,blocks.1.hook_resid_post", "listed twice"),
    ] {
        let a: Vec<String> = args(c.to_str().unwrap(), "f32", sites);
        refused(&a.iter().map(String::as_str).collect::<Vec<_>>(), needle);
    }
}

/// What `prism batch --pack` relies on to run several windows per pass: a batched run gives each
/// sequence exactly (bit for bit) what a run of it alone gives: statistics, top predictions,
/// residual stream, sub-layer sites, attention maps and the logit lens, on the CPU and on the GPU.
#[test]
fn a_batch_of_windows_gives_each_window_what_its_own_run_gives() {
    use prism_analysis::backend::{cpu::CpuBackend, Backend, Capture};
    use prism_analysis::trace::Trace;
    let capture = Capture {
        residual: true,
        sites: true,
        attention: true,
        logit_lens: true,
        top_k: 3,
        ..Capture::default()
    };
    for path in [sample("smollm2"), fixtures().join("archs").join("qwen3")] {
        let model = load(&path);
        let mut rng = Rng::new(9);
        let windows: Vec<Vec<u32>> = (0..3)
            .map(|_| {
                (0..12)
                    .map(|_| (rng.next_u64() % model.spec.vocab.min(4000) as u64) as u32)
                    .collect()
            })
            .collect();
        let seqs: Vec<&[u32]> = windows.iter().map(Vec::as_slice).collect();
        // The GPU (lavapipe here and in CI) on the small fixture only: it is slow.
        let mut backends: Vec<(String, Box<dyn Backend>)> =
            vec![("cpu".into(), Box::new(CpuBackend::new(&model).unwrap()))];
        if path.ends_with("qwen3") {
            backends.push((
                "gpu".into(),
                Box::new(prism_analysis::backend::gpu::GpuBackend::new(&model, gpu()).unwrap()),
            ));
        }
        for (name, backend) in &backends {
            let batched = Trace::run_batch(&model, backend.as_ref(), &seqs, capture, 3).unwrap();
            assert_eq!(batched.len(), 3);
            for (b, ids) in seqs.iter().enumerate() {
                let one = Trace::run(&model, backend.as_ref(), ids, capture, 3).unwrap();
                let got = &batched[b];
                let ctx = format!("{} {name} window {b}", path.display());
                assert_eq!(got.surprisal_bits, one.surprisal_bits, "{ctx}: surprisal");
                assert_eq!(got.entropy_bits, one.entropy_bits, "{ctx}: entropy");
                assert_eq!(got.rank, one.rank, "{ctx}: rank");
                let top = |t: &Trace| -> Vec<Vec<(u32, f32)>> {
                    t.top
                        .iter()
                        .map(|r| r.iter().map(|p| (p.id, p.p)).collect())
                        .collect()
                };
                assert_eq!(top(got), top(&one), "{ctx}: top");
                assert_eq!(got.output.residual, one.output.residual, "{ctx}: residual");
                let (gs, os) = (
                    got.output.sites.as_ref().unwrap(),
                    one.output.sites.as_ref().unwrap(),
                );
                assert_eq!(gs.mlp_out, os.mlp_out, "{ctx}: mlp_out");
                assert_eq!(gs.attn_out, os.attn_out, "{ctx}: attn_out");
                assert_eq!(gs.head_z, os.head_z, "{ctx}: head_z");
                assert!(one.output.attention.is_some() && one.output.logit_lens.is_some());
                assert_eq!(
                    got.output.attention, one.output.attention,
                    "{ctx}: attention"
                );
                assert_eq!(got.output.logit_lens, one.output.logit_lens, "{ctx}: lens");
            }
        }
    }
}
