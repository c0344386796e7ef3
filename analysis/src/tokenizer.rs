//! Tokenizers: HF `tokenizer.json` through the `tokenizers` crate, or rebuilt from GGUF metadata
//! (byte-level BPE "gpt2" style with merges, and SentencePiece "llama" style with scores).

use std::path::Path;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
    Tokenizer,
};

use crate::error::{PrismError, Result};
use crate::gguf::{GgufMeta, Value};

const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen3.5's: letters keep their combining marks (`\p{M}`) in a word.
const QWEN35_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's `deepseek-llm` splits (DeepSeek LLM 7B/67B, a Llama-architecture model), applied in turn.
const DEEPSEEK_LLM_PATTERNS: &[&str] = &[
    r#"[\r\n]"#,
    r#"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+"#,
    r#"\s?[!-/:-~！-／：-～‘-‟　-。]+"#,
    r#"\s+$"#,
    r#"[一-龥ࠀ-一가-퟿]+"#,
    r#"\p{N}+"#,
];
/// llama.cpp's `deepseek-coder` splits (DeepSeek Coder, a Llama-architecture model), applied in turn.
const DEEPSEEK_CODER_PATTERNS: &[&str] = &[
    r#"[\r\n]"#,
    r#"\s?\p{L}+"#,
    r#"\s?\p{P}+"#,
    r#"[一-龥ࠀ-一가-퟿]+"#,
    r#"\p{N}"#,
];

/// llama.cpp's `falcon` splits, applied in turn: punctuation runs, GPT-2's split (without its
/// final `\s+`), runs of three digits.
const FALCON_PATTERNS: &[&str] = &[
    r"[\p{P}\$\+<=>\^~\|`]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    r"[0-9][0-9][0-9]",
];
/// A token as it should appear on screen and in figures: visible whitespace.
pub fn show_token(s: &str) -> String {
    s.replace('\n', "↵").replace('\t', "⇥").replace(' ', "·")
}

/// A token's byte range in the text it came from.
pub type Span = (usize, usize);

/// The largest `tokenizer.json` Prism reads (the largest published, Gemma's, is 33 MB).
pub const MAX_TOKENIZER_JSON: u64 = 128 << 20;
/// The longest regular expression a `tokenizer.json` may carry (real ones are under 1 KiB).
const MAX_PATTERN: usize = 16 << 10;
/// The most added tokens a `tokenizer.json` may list (real ones have a few hundred to 300k).
const MAX_ADDED_TOKENS: usize = 1 << 20;
/// How long the pre-tokenizer regexes may take over one text before Prism gives up on it.
const REGEX_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// The regular expressions of a `tokenizer.json`, run ahead of the tokenizer on each text: the
/// `tokenizers` crate stops splitting silently when a pattern's backtracking limit is hit (a wrong
/// tokenization), and a pattern just under the limit at every position takes hours. Both become
/// errors here before the tokenizer runs.
struct RegexGuard {
    path: std::path::PathBuf,
    patterns: Vec<fancy_regex::Regex>,
}

impl RegexGuard {
    fn check(&self, text: &str) -> Result<()> {
        let start = std::time::Instant::now();
        for re in &self.patterns {
            for m in re.find_iter(text) {
                let short: String = re.as_str().chars().take(40).collect();
                if let Err(e) = m {
                    return Err(PrismError::Tokenizer {
                        path: self.path.clone(),
                        message: format!(
                            "the regular expression {short:?} cannot split this text: {e} (catastrophic backtracking in a hostile or broken pattern)"
                        ),
                    });
                }
                if start.elapsed() > REGEX_BUDGET {
                    return Err(PrismError::Tokenizer {
                        path: self.path.clone(),
                        message: format!(
                            "the regular expression {short:?} took over {} s on a text of {} bytes (a hostile or broken pattern)",
                            REGEX_BUDGET.as_secs(),
                            text.len()
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Every `{"Regex": pattern}` below a JSON value (split pre-tokenizers, replace normalizers).
fn regexes<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("Regex", serde_json::Value::String(p)) => out.push(p),
                    _ => regexes(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| regexes(v, out)),
        _ => {}
    }
}

/// Reads what of a `tokenizer.json` Prism checks before handing it to the `tokenizers` crate:
/// its regular expressions (length, compiled) and the size of its added-token table.
fn guard_tokenizer_json(path: &Path, bytes: &[u8]) -> Result<RegexGuard> {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(default)]
        normalizer: serde_json::Value,
        #[serde(default)]
        pre_tokenizer: serde_json::Value,
        #[serde(default)]
        added_tokens: Option<Vec<serde::de::IgnoredAny>>,
    }
    let err = |m: String| PrismError::Tokenizer {
        path: path.to_path_buf(),
        message: m,
    };
    let peek: Peek = serde_json::from_slice(bytes)
        .map_err(|e| err(format!("cannot read tokenizer.json: {e}")))?;
    let added = peek.added_tokens.map_or(0, |a| a.len());
    if added > MAX_ADDED_TOKENS {
        return Err(err(format!(
            "{added} added tokens, over the limit of {MAX_ADDED_TOKENS}"
        )));
    }
    let mut found = Vec::new();
    regexes(&peek.normalizer, &mut found);
    regexes(&peek.pre_tokenizer, &mut found);
    let mut patterns = Vec::new();
    for p in found {
        if p.len() > MAX_PATTERN {
            return Err(err(format!(
                "a regular expression of {} bytes, over the limit of {MAX_PATTERN}",
                p.len()
            )));
        }
        let re = fancy_regex::Regex::new(p).map_err(|e| {
            let short: String = p.chars().take(40).collect();
            err(format!(
                "the regular expression {short:?} does not compile: {e}"
            ))
        })?;
        patterns.push(re);
    }
    Ok(RegexGuard {
        path: path.to_path_buf(),
        patterns,
    })
}

pub struct PrismTokenizer {
    inner: Tokenizer,
    /// The file's own regexes, checked on each text first (none for GGUF: Prism's own patterns).
    guard: Option<RegexGuard>,
    /// Where it came from and what kind it is, for `prism info`.
    pub kind: String,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    /// Whether the model's own settings prepend BOS (GGUF `add_bos_token`; for tokenizer.json, its post-processor).
    pub adds_bos: bool,
    /// Things the user should know, such as an unknown pre-tokenizer replaced by GPT-2's.
    pub warnings: Vec<String>,
    /// Other tokens that end a generation (GGUF end-of-turn and end-of-message ids).
    pub end_of_turn: Vec<u32>,
}

impl PrismTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let len = std::fs::metadata(path)
            .map_err(|e| PrismError::io(path, e))?
            .len();
        if len > MAX_TOKENIZER_JSON {
            return Err(PrismError::Tokenizer {
                path: path.to_path_buf(),
                message: format!(
                    "tokenizer.json is {} MiB, over the limit of {} MiB",
                    len >> 20,
                    MAX_TOKENIZER_JSON >> 20
                ),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| PrismError::io(path, e))?;
        let guard = guard_tokenizer_json(path, &bytes)?;
        // The tokenizers crate can panic on some malformed files; a panic here is a bad file.
        let parsed = crate::guard::guarded(|| Tokenizer::from_bytes(&bytes)).map_err(|panic| {
            PrismError::Tokenizer {
                path: path.to_path_buf(),
                message: format!("cannot read tokenizer.json: malformed ({panic})"),
            }
        })?;
        let mut inner = parsed.map_err(|e| PrismError::Tokenizer {
            path: path.to_path_buf(),
            message: format!("cannot read tokenizer.json: {e}"),
        })?;
        // Sentence-transformers ship tokenizer.json with padding and truncation forced on; both would
        // silently change the input (and the mean pooling), so Prism turns them off.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| PrismError::Tokenizer {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let model = match inner.get_model() {
            tokenizers::ModelWrapper::BPE(_) => "BPE",
            tokenizers::ModelWrapper::WordPiece(_) => "WordPiece",
            tokenizers::ModelWrapper::Unigram(_) => "Unigram",
            tokenizers::ModelWrapper::WordLevel(_) => "WordLevel",
        };
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let bos_id = find(&[
            "<|begin_of_text|>",
            "<s>",
            "<|endoftext|>",
            "<|im_start|>",
            "[CLS]",
        ]);
        let eos_id = find(&[
            "<|end_of_text|>",
            "</s>",
            "<|endoftext|>",
            "<|im_end|>",
            "[SEP]",
        ]);
        let adds_bos = match (bos_id, inner.encode("a", true)) {
            (Some(b), Ok(enc)) => enc.get_ids().first() == Some(&b),
            _ => false,
        };
        Ok(PrismTokenizer {
            inner,
            guard: Some(guard),
            kind: format!("tokenizer.json ({model})"),
            bos_id,
            eos_id,
            adds_bos,
            warnings: Vec::new(),
            end_of_turn: Vec::new(),
        })
    }

    pub fn from_gguf(meta: GgufMeta<'_>) -> Result<Self> {
        let path = meta.path().to_path_buf();
        let err = |m: String| PrismError::Tokenizer {
            path: path.clone(),
            message: m,
        };
        let model = meta
            .str("tokenizer.ggml.model")
            .ok_or_else(|| err("GGUF has no tokenizer (tokenizer.ggml.model is missing)".into()))?;
        if !matches!(model, "gpt2" | "llama" | "bert" | "gemma4") {
            return Err(err(format!(
                "GGUF tokenizer model {model:?} is not supported (gpt2, llama, bert, gemma4)"
            )));
        }
        let tokens = string_array(meta, "tokenizer.ggml.tokens").map_err(&err)?;
        if tokens.is_empty() {
            return Err(err("tokenizer.ggml.tokens is empty".into()));
        }
        let types: Vec<i64> = match meta.array("tokenizer.ggml.token_type") {
            Some(a) => a.iter().map(value_i64).collect(),
            None => vec![1; tokens.len()],
        };
        let id = |key: &str| -> Option<u32> {
            meta.u64_opt(key)
                .ok()
                .flatten()
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&v| (v as usize) < tokens.len())
        };
        let bos_id = id("tokenizer.ggml.bos_token_id");
        let eos_id = id("tokenizer.ggml.eos_token_id");
        let mut warnings = Vec::new();
        let (mut inner, kind, default_bos) = match model {
            "gpt2" => {
                let merges = match meta.array("tokenizer.ggml.merges") {
                    Some(_) => string_array(meta, "tokenizer.ggml.merges").map_err(&err)?,
                    None => {
                        return Err(err(
                            "a \"gpt2\" GGUF tokenizer needs tokenizer.ggml.merges".into()
                        ))
                    }
                };
                let merges = merges
                    .iter()
                    .enumerate()
                    .map(|(i, m)| match m.split_once(' ') {
                        Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                            Ok((a.to_string(), b.to_string()))
                        }
                        _ => Err(err(format!(
                            "merge {i} {m:?} is not two tokens separated by a space"
                        ))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let vocab: Vocab = tokens
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.clone(), i as u32))
                    .collect();
                let pre = meta.str("tokenizer.ggml.pre").unwrap_or("default");
                // llama.cpp (and the Llama 3 tokenizer.json) take a whole word that is in the
                // vocabulary as one token before merging, for these pre-tokenizers.
                let ignore_merges = IGNORE_MERGES.contains(&pre);
                let bpe = BPE::builder()
                    .vocab_and_merges(vocab, merges)
                    .ignore_merges(ignore_merges)
                    .build()
                    .map_err(|e| {
                        err(format!(
                            "cannot build the BPE from GGUF vocab and merges: {e}"
                        ))
                    })?;
                let pre_tokenizer = gpt2_pre_tokenizer(pre, &mut warnings).map_err(&err)?;
                let mut t = Tokenizer::new(bpe);
                t.with_pre_tokenizer(Some(pre_tokenizer));
                t.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())));
                (
                    t,
                    format!("GGUF byte-level BPE (gpt2, pre-tokenizer {pre:?})"),
                    false,
                )
            }
            "llama" => {
                let scores: Vec<f64> = match meta.array("tokenizer.ggml.scores") {
                    Some(a) => a.iter().map(value_f64).collect(),
                    None => {
                        return Err(err(
                            "a \"llama\" GGUF tokenizer needs tokenizer.ggml.scores".into(),
                        ))
                    }
                };
                if scores.len() != tokens.len() {
                    return Err(err(format!(
                        "{} scores for {} tokens",
                        scores.len(),
                        tokens.len()
                    )));
                }
                // Gemma's SentencePiece adds no leading space; Llama's does.
                let space_prefix = meta
                    .bool_opt("tokenizer.ggml.add_space_prefix")
                    .map_err(|e| err(e.to_string()))?
                    .unwrap_or(true);
                let t = sentencepiece_as_bpe(
                    &tokens,
                    &scores,
                    &types,
                    id("tokenizer.ggml.unknown_token_id"),
                    space_prefix,
                )
                .map_err(&err)?;
                (t, "GGUF SentencePiece (llama)".to_string(), true)
            }
            "gemma4" => {
                let merges = string_array(meta, "tokenizer.ggml.merges").map_err(&err)?;
                let t = gemma4_bpe(&tokens, &merges).map_err(&err)?;
                (
                    t,
                    "GGUF BPE (gemma4: spaces as ▁, raw UTF-8, byte fallback)".to_string(),
                    true,
                )
            }
            "bert" => {
                let cls = id("tokenizer.ggml.cls_token_id").or(bos_id);
                let sep = id("tokenizer.ggml.seperator_token_id").or(eos_id);
                let t = wordpiece(
                    &tokens,
                    &types,
                    id("tokenizer.ggml.unknown_token_id"),
                    cls,
                    sep,
                )
                .map_err(&err)?;
                (t, "GGUF WordPiece (bert)".to_string(), false)
            }
            other => {
                return Err(err(format!(
                    "GGUF tokenizer model {other:?} is not supported (gpt2, llama, bert, gemma4)"
                )))
            }
        };
        // Control tokens (chat markers and the like) match as whole units where special tokens
        // are read; user-defined ones (GPT-NeoX's runs of spaces, say) always do, in the raw text,
        // as llama.cpp's tokenizer matches them.
        let typed = |want: i64| -> Vec<String> {
            tokens
                .iter()
                .zip(types.iter().chain(std::iter::repeat(&1)))
                .filter(|(_, &ty)| ty == want)
                .map(|(t, _)| t.clone())
                .collect()
        };
        let special: Vec<AddedToken> = typed(3)
            .into_iter()
            .map(|t| AddedToken::from(t, true))
            .collect();
        inner
            .add_special_tokens(special)
            .map_err(|e| err(format!("cannot add special tokens: {e}")))?;
        let user: Vec<AddedToken> = typed(4)
            .into_iter()
            .map(|t| AddedToken::from(t, false).normalized(false))
            .collect();
        inner
            .add_tokens(user)
            .map_err(|e| err(format!("cannot add user-defined tokens: {e}")))?;
        let adds_bos = meta
            .bool_opt("tokenizer.ggml.add_bos_token")
            .ok()
            .flatten()
            .unwrap_or(default_bos)
            && bos_id.is_some();
        let end_of_turn = ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"]
            .iter()
            .filter_map(|k| id(k))
            .collect();
        Ok(PrismTokenizer {
            guard: None,
            inner,
            kind,
            bos_id,
            eos_id,
            adds_bos,
            warnings,
            end_of_turn,
        })
    }

    /// Token ids for `text`, with the model's own special tokens (BOS, or BERT's [CLS] ... [SEP]).
    /// `force_bos` prepends BOS when the model's settings do not.
    pub fn encode(&self, text: &str, force_bos: bool) -> Result<Vec<u32>> {
        self.check(text)?;
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| PrismError::Input(format!("cannot tokenize the text: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if self.kind.starts_with("GGUF") && self.adds_bos {
            if let Some(b) = self.bos_id {
                ids.insert(0, b);
            }
        }
        if force_bos {
            if let Some(b) = self.bos_id {
                if ids.first() != Some(&b) {
                    ids.insert(0, b);
                }
            }
        }
        Ok(ids)
    }

    /// Token ids for `text` as `prism tokenize` gives them. Plain (`special` false): no BOS/EOS,
    /// and special tokens written in the text are text like any other (llama.cpp's
    /// `parse_special = false`). With `special`: the model's own BOS/EOS and special tokens parsed.
    pub fn tokenize(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        if special {
            return self.encode(text, false);
        }
        self.check(text)?;
        let mut raw = self.inner.clone();
        raw.set_encode_special_tokens(true);
        let enc = raw
            .encode(text, false)
            .map_err(|e| PrismError::Input(format!("cannot tokenize the text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids for `text` alone, without BOS or other special tokens.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        self.check(text)?;
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| PrismError::Input(format!("cannot tokenize {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Like [`PrismTokenizer::encode`], with each token's byte range in `text` (empty for special tokens).
    pub fn encode_with_offsets(
        &self,
        text: &str,
        force_bos: bool,
    ) -> Result<(Vec<u32>, Vec<Span>)> {
        self.check(text)?;
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| PrismError::Input(format!("cannot tokenize the text: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        let mut offsets = enc.get_offsets().to_vec();
        let prepend = (self.kind.starts_with("GGUF") && self.adds_bos)
            || (force_bos && ids.first() != self.bos_id.as_ref());
        if prepend {
            if let Some(b) = self.bos_id {
                ids.insert(0, b);
                offsets.insert(0, (0, 0));
            }
        }
        Ok((ids, offsets))
    }

    fn check(&self, text: &str) -> Result<()> {
        match &self.guard {
            Some(g) => g.check(text),
            None => Ok(()),
        }
    }

    /// Text for a sequence of ids, special tokens included (as transformers' `decode` gives it).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| PrismError::Input(format!("cannot decode the tokens: {e}")))
    }

    /// The ids that end a generation: EOS and any end-of-turn token.
    pub fn end_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.eos_id.into_iter().collect();
        for &e in &self.end_of_turn {
            if !ids.contains(&e) {
                ids.push(e);
            }
        }
        ids
    }

    /// True for byte-level BPE vocabularies, where a leading space is part of a word's token.
    pub fn is_byte_level(&self) -> bool {
        self.kind.contains("byte-level")
            || self.token_to_id("Ġthe").is_some()
            || self.token_to_id("Ġ").is_some()
    }

    /// The text one token stands for, as a reader would see it (" is", "\n", "[CLS]").
    pub fn token_text(&self, id: u32) -> String {
        match self.inner.decode(&[id], false) {
            Ok(s) if !s.is_empty() => s,
            _ => self
                .inner
                .id_to_token(id)
                .unwrap_or_else(|| format!("<{id}>")),
        }
    }

    /// The vocabulary entry itself ("Ġis", "##ing").
    pub fn token_piece(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.inner.token_to_id(piece)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

fn value_i64(v: &Value) -> i64 {
    v.as_i64().unwrap_or(1)
}

fn value_f64(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn string_array(meta: GgufMeta<'_>, key: &str) -> std::result::Result<Vec<String>, String> {
    let a = meta.array(key).ok_or_else(|| format!("{key} is missing"))?;
    a.iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!(
                "{key}[{i}] is a {}, expected a string",
                other.type_name()
            )),
        })
        .collect()
}

/// llama.cpp's `tokenizer.ggml.pre` names the splitting regex of byte-level BPE tokenizers.
fn gpt2_pre_tokenizer(
    pre: &str,
    warnings: &mut Vec<String>,
) -> std::result::Result<PreTokenizerWrapper, String> {
    let split = |pattern: &str| -> std::result::Result<PreTokenizerWrapper, String> {
        let split = Split::new(
            SplitPattern::Regex(pattern.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| e.to_string())?;
        Ok(PreTokenizerWrapper::Sequence(PreSequence::new(vec![
            PreTokenizerWrapper::Split(split),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
        ])))
    };
    // Several regexes applied in turn, each splitting the pieces the previous left (llama.cpp's
    // `unicode_regex_split`), then the byte-level mapping.
    let splits =
        |patterns: &[&str], gpt2: bool| -> std::result::Result<PreTokenizerWrapper, String> {
            let mut seq = patterns
                .iter()
                .map(|p| {
                    Split::new(
                        SplitPattern::Regex(p.to_string()),
                        SplitDelimiterBehavior::Isolated,
                        false,
                    )
                    .map(PreTokenizerWrapper::Split)
                    .map_err(|e| format!("pre-tokenizer {pre:?}: {e}"))
                })
                .collect::<std::result::Result<Vec<_>, String>>()?;
            seq.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
                false, true, gpt2,
            )));
            Ok(PreTokenizerWrapper::Sequence(PreSequence::new(seq)))
        };
    Ok(match pre {
        "default" | "gpt2" | "gpt-2" | "mpt" | "olmo" => {
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true))
        }
        // SmolLM: every digit on its own, then GPT-2's split, no prefix space (its tokenizer.json).
        "smollm" => PreTokenizerWrapper::Sequence(PreSequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
        ])),
        // Every numeric character on its own (½ too), then GPT-2's split.
        "starcoder" | "refact" | "command-r" => splits(&[r"\p{N}"], true)?,
        "deepseek-llm" => splits(DEEPSEEK_LLM_PATTERNS, false)?,
        "falcon" => splits(FALCON_PATTERNS, false)?,
        "deepseek-coder" => splits(DEEPSEEK_CODER_PATTERNS, false)?,
        "llama3" | "llama-bpe" | "llama-v3" | "dbrx" | "smaug-bpe" => split(LLAMA3_PATTERN)?,
        "qwen2" | "deepseek-r1-qwen" => split(QWEN2_PATTERN)?,
        "qwen35" => split(QWEN35_PATTERN)?,
        other => {
            warnings.push(format!(
                "unknown GGUF pre-tokenizer {other:?}: splitting text the GPT-2 way, so token ids may differ from the original tokenizer"
            ));
            let _ = GPT2_PATTERN;
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true))
        }
    })
}

/// GGUF pre-tokenizers whose BPE takes a word that is in the vocabulary whole (llama.cpp's
/// `ignore_merges`, `llama-vocab.cpp`).
const IGNORE_MERGES: &[&str] = &[
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "minicpm5",
];

/// Gemma 4's tokenizer as llama.cpp runs it (`llama-vocab.cpp`, pre-tokenizer `gemma4`): every
/// space becomes "▁", the text splits into runs of newlines and runs of everything else, and BPE
/// merges run over UTF-8 characters (no byte-level mapping); a run of newlines that is a token is
/// taken whole; characters without a token fall back to `<0xXX>` byte tokens. A merge is split at
/// its first space after the first byte, as llama.cpp reads them.
fn gemma4_bpe(tokens: &[String], merges: &[String]) -> std::result::Result<Tokenizer, String> {
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let cut = m
                .char_indices()
                .skip(1)
                .find(|(_, c)| *c == ' ')
                .map(|(p, _)| p);
            match cut {
                Some(p) if p + 1 < m.len() => Ok((m[..p].to_string(), m[p + 1..].to_string())),
                _ => Err(format!(
                    "merge {i} {m:?} is not two tokens separated by a space"
                )),
            }
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .build()
        .map_err(|e| format!("cannot build the gemma4 BPE: {e}"))?;
    let mut t = Tokenizer::new(bpe);
    t.with_normalizer(Some(NormalizerWrapper::Replace(
        Replace::new(" ", "▁").map_err(|e| e.to_string())?,
    )))
    .map_err(|e| e.to_string())?;
    let split = Split::new(
        SplitPattern::Regex("[^\\n]+|[\\n]+".to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| e.to_string())?;
    t.with_pre_tokenizer(Some(PreTokenizerWrapper::Split(split)));
    t.with_decoder(Some(DecoderSequence::new(vec![
        DecoderWrapper::Replace(Replace::new("▁", " ").map_err(|e| e.to_string())?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ])));
    Ok(t)
}

/// SentencePiece BPE as the `tokenizers` crate runs it: merges ranked by the score of the merged
/// piece, byte fallback for unknown bytes, "▁" for spaces, and a "▁" prepended to the text.
fn sentencepiece_as_bpe(
    tokens: &[String],
    scores: &[f64],
    types: &[i64],
    unk: Option<u32>,
    space_prefix: bool,
) -> std::result::Result<Tokenizer, String> {
    let vocab: std::collections::HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let mut merges: Vec<(f64, u32, u32, String, String)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        let normal = types.get(i).copied().unwrap_or(1) == 1;
        if !normal || piece.chars().count() < 2 {
            continue;
        }
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if let (Some(&a), Some(&b)) = (vocab.get(l), vocab.get(r)) {
                merges.push((scores[i], a, b, l.to_string(), r.to_string()));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let merges = merges.into_iter().map(|(_, _, _, l, r)| (l, r)).collect();
    let bpe_vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(bpe_vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(u) = unk {
        builder = builder.unk_token(tokens[u as usize].clone());
    }
    let bpe = builder
        .build()
        .map_err(|e| format!("cannot build the SentencePiece BPE: {e}"))?;
    let mut t = Tokenizer::new(bpe);
    let mut normalizers = Vec::new();
    if space_prefix {
        normalizers.push(NormalizerWrapper::Prepend(Prepend::new("▁".into())));
    }
    normalizers.push(NormalizerWrapper::Replace(
        Replace::new(" ", "▁").map_err(|e| e.to_string())?,
    ));
    t.with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .map_err(|e| e.to_string())?;
    let mut decoders = vec![
        DecoderWrapper::Replace(Replace::new("▁", " ").map_err(|e| e.to_string())?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if space_prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    t.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(t)
}

/// BERT's WordPiece from llama.cpp's GGUF vocabulary, where a word-initial piece carries "▁" and a
/// continuation piece carries nothing (the original "##" prefix is dropped by the converter).
/// llama.cpp always lowercases and splits on punctuation, as BERT's uncased normalizer does.
fn wordpiece(
    tokens: &[String],
    types: &[i64],
    unk: Option<u32>,
    cls: Option<u32>,
    sep: Option<u32>,
) -> std::result::Result<Tokenizer, String> {
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::bert::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::processors::bert::BertProcessing;
    let mut vocab = std::collections::HashMap::new();
    for (i, t) in tokens.iter().enumerate() {
        let control = types.get(i).copied().unwrap_or(1) == 3;
        let piece = if control {
            t.clone()
        } else if let Some(word) = t.strip_prefix('\u{2581}') {
            word.to_string()
        } else {
            format!("##{t}")
        };
        vocab.entry(piece).or_insert(i as u32);
    }
    let unk_token = unk
        .and_then(|u| tokens.get(u as usize))
        .cloned()
        .unwrap_or_else(|| "[UNK]".into());
    let model = WordPiece::builder()
        .vocab(
            vocab
                .into_iter()
                .collect::<tokenizers::models::bpe::Vocab>(),
        )
        .unk_token(unk_token)
        .continuing_subword_prefix("##".into())
        .build()
        .map_err(|e| format!("cannot build the WordPiece vocabulary: {e}"))?;
    let mut t = Tokenizer::new(model);
    t.with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .map_err(|e| e.to_string())?;
    t.with_pre_tokenizer(Some(BertPreTokenizer));
    if let (Some(c), Some(s)) = (cls, sep) {
        let name = |i: u32| tokens.get(i as usize).cloned().unwrap_or_default();
        t.with_post_processor(Some(BertProcessing::new((name(s), s), (name(c), c))));
    }
    t.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
    Ok(t)
}
