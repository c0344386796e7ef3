//! Tokenizers against llama.cpp's own tokenizer suite (`tests/fixtures/llama-vocab`, README there),
//! and `prism tokenize` as a user calls it.

use prism_analysis::checkpoint;
use prism_tests::*;

/// The texts and expected ids of one vocabulary, split as `test-tokenizer-0.cpp` reads them.
fn cases(name: &str) -> Vec<(String, Vec<u32>)> {
    let dir = fixtures().join("llama-vocab");
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts: Vec<String> = inp.split(sep).map(str::to_string).collect();
    if texts.last().is_some_and(|t| t.is_empty()) {
        texts.pop();
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(texts.len(), ids.len(), "{name}: .inp and .out disagree");
    texts.into_iter().zip(ids).collect()
}

#[test]
fn llama_cpp_tokenizer_suite_passes_for_every_kept_vocabulary() {
    let mut total = 0;
    for name in [
        "llama-spm",
        "llama-bpe",
        "qwen2",
        "qwen35",
        "gpt-2",
        "phi-3",
        "bert-bge",
        "gemma-4",
        // GPT-NeoX's tokenizer (its runs of spaces are user-defined tokens), DeepSeek's two
        // Llama-architecture vocabularies, Falcon's and StarCoder's.
        "mpt",
        "deepseek-llm",
        "deepseek-coder",
        "falcon",
        "starcoder",
    ] {
        let path = llama_vocab(name);
        let tok = checkpoint::load_tokenizer(&path).expect("a vocab-only GGUF opens");
        let cases = cases(name);
        assert!(cases.len() >= 40, "{name}: {} cases", cases.len());
        for (text, want) in cases {
            let got = if text.is_empty() {
                Vec::new()
            } else {
                tok.tokenize(&text, false).unwrap()
            };
            assert_eq!(got, want, "{name}: {text:?}");
            total += 1;
        }
    }
    assert!(total >= 13 * 40, "{total} cases");
}

#[test]
fn tokenize_prints_ids_and_pieces_and_reads_special_tokens_only_when_asked() {
    let m = sample("smollm2");
    let m = m.to_str().unwrap();
    let text = "Hello<|im_start|> world";
    let plain = json_of(&["tokenize", m, "--text", text, "--json"]);
    let ids: Vec<u64> = plain["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let pieces = plain["pieces"].as_array().unwrap();
    assert_eq!(ids.len(), pieces.len());
    assert!(
        !ids.contains(&1),
        "<|im_start|> (id 1) is text without --special: {ids:?}"
    );
    assert_eq!(pieces[0], "Hello");
    let special = json_of(&["tokenize", m, "--text", text, "--special", "--json"]);
    assert_eq!(special["ids"], serde_json::json!([19556, 1, 905]));
    assert_eq!(special["pieces"][1], "<|im_start|>");
    // A vocab-only GGUF, the table form, and a file.
    let vocab = llama_vocab("llama-bpe");
    let file = std::env::temp_dir().join(format!("prism-tokenize-{}.txt", std::process::id()));
    std::fs::write(&file, " Hello, world!").unwrap();
    let out = prism(&[
        "tokenize",
        vocab.to_str().unwrap(),
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("22691") && table.contains("\"ĠHello\""),
        "{table}"
    );
    assert!(table.contains("4 tokens for 14 bytes"), "{table}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn tokenize_refuses_what_it_cannot_read() {
    let dir = std::env::temp_dir().join(format!("prism-tokenize-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("no-tokenizer");
    std::fs::create_dir_all(&empty).unwrap();
    let garbage = dir.join("garbage.gguf");
    std::fs::write(&garbage, b"GGUF\x03\x00\x00\x00nonsense").unwrap();
    for (path, says) in [
        (empty.clone(), "no tokenizer.json"),
        (garbage.clone(), "garbage.gguf"),
    ] {
        let out = prism(&["tokenize", path.to_str().unwrap(), "--text", "hi"]);
        assert_eq!(out.status.code(), Some(2), "{}", path.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
    let out = prism(&["tokenize", empty.to_str().unwrap(), "--text", ""]);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
