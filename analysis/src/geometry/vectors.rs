//! Vectors for words: rows of the input embedding (sub-tokens averaged), rows of the unembedding,
//! or the residual stream at any layer at the word's last token inside a template sentence.

use std::str::FromStr;

use serde::Serialize;

use crate::backend::Backend;
use crate::error::{PrismError, Result};
use crate::model::Model;
use crate::weights::Weight;

/// Where a word's vector comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Input embedding; for byte-level BPE the word with its leading space (" red").
    Embed,
    /// Input embedding of the word without a leading space ("red").
    EmbedNoSpace,
    /// Row of the output (unembedding) matrix.
    Unembed,
    /// Residual stream in the template: 0 = embedding output, l = after block l.
    Layer(usize),
    /// After the final norm, in the template (the last block's output for encoders).
    FinalNorm,
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "embed" => Ok(Source::Embed),
            "embed_nospace" => Ok(Source::EmbedNoSpace),
            "unembed" => Ok(Source::Unembed),
            "final_norm" => Ok(Source::FinalNorm),
            other => match other.strip_prefix("layer:").map(str::parse::<usize>) {
                Some(Ok(l)) => Ok(Source::Layer(l)),
                _ => Err(format!(
                    "unknown source {other:?} (embed, embed_nospace, unembed, layer:N, final_norm)"
                )),
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Embed => write!(f, "embed"),
            Source::EmbedNoSpace => write!(f, "embed_nospace"),
            Source::Unembed => write!(f, "unembed"),
            Source::Layer(l) => write!(f, "layer:{l}"),
            Source::FinalNorm => write!(f, "final_norm"),
        }
    }
}

pub const DEFAULT_TEMPLATE: &str = "The color of the object is {}.";

/// A word, the tokens that stood for it, and its vector.
#[derive(Debug, Clone, Serialize)]
pub struct WordVector {
    pub word: String,
    pub ids: Vec<u32>,
    pub pieces: Vec<String>,
    #[serde(skip)]
    pub vector: Vec<f32>,
}

impl WordVector {
    pub fn is_split(&self) -> bool {
        self.ids.len() > 1
    }
}

/// A weight matrix as f32 rows, for lookups and neighbour search.
pub struct Table {
    pub rows: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Table {
    pub fn from_weight(w: &Weight) -> Result<Table> {
        let data = w.to_f32();
        Ok(Table {
            rows: w.shape[0],
            width: w.shape.get(1).copied().unwrap_or(1),
            data,
        })
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.width..(i + 1) * self.width]
    }

    /// The mean of the rows `ids`.
    pub fn mean_of(&self, ids: &[u32]) -> Vec<f32> {
        let mut v = vec![0f64; self.width];
        for &id in ids {
            for (a, &b) in v.iter_mut().zip(self.row(id as usize)) {
                *a += b as f64;
            }
        }
        v.iter()
            .map(|a| (a / ids.len().max(1) as f64) as f32)
            .collect()
    }
}

/// A word in its template: its tokens there, the residual stream at its last token for every layer,
/// and the final hidden state.
pub type Contextual = (WordVector, Vec<Vec<f32>>, Vec<f32>);

/// Extracts vectors from one model; holds the tables it needs so repeated calls are cheap.
pub struct Extractor<'a> {
    pub model: &'a Model,
    backend: &'a dyn Backend,
    embed: Option<Table>,
    unembed: Option<Table>,
}

impl<'a> Extractor<'a> {
    pub fn new(model: &'a Model, backend: &'a dyn Backend) -> Self {
        Extractor {
            model,
            backend,
            embed: None,
            unembed: None,
        }
    }

    fn tokenizer(&self) -> Result<&crate::tokenizer::PrismTokenizer> {
        self.model.tokenizer.as_ref().ok_or_else(|| {
            PrismError::Input(format!(
                "{} has no tokenizer: words cannot be looked up",
                self.model.info.path.display()
            ))
        })
    }

    pub fn embedding_table(&mut self) -> Result<&Table> {
        if self.embed.is_none() {
            self.embed = Some(Table::from_weight(&self.model.weights.token_embedding)?);
        }
        self.embed
            .as_ref()
            .ok_or_else(|| PrismError::Backend("embedding table unavailable".into()))
    }

    pub fn unembedding_table(&mut self) -> Result<&Table> {
        if !self.model.spec.causal {
            return Err(PrismError::Input(
                "an encoder has no unembedding matrix; use --source embed or layer:N".into(),
            ));
        }
        if self.unembed.is_none() {
            self.unembed = Some(Table::from_weight(self.model.weights.unembedding())?);
        }
        self.unembed
            .as_ref()
            .ok_or_else(|| PrismError::Backend("unembedding table unavailable".into()))
    }

    /// The vocabulary to search for neighbours: the unembedding when `unembed`, else the input
    /// embedding; refused when its rows are not `width`-dimensional (a layer vector of a model whose
    /// residual width differs from its embedding).
    pub fn search_table(&mut self, unembed: bool, width: usize) -> Result<&Table> {
        let (name, table) = if unembed {
            ("unembedding", self.unembedding_table()?)
        } else {
            ("embedding", self.embedding_table()?)
        };
        if table.width != width {
            return Err(PrismError::Input(format!(
                "the vectors are {width}-dimensional but the {name} matrix is {}-dimensional",
                table.width
            )));
        }
        Ok(table)
    }

    /// The tokens a word becomes on its own, with or without a leading space.
    pub fn word_ids(&self, word: &str, leading_space: bool) -> Result<Vec<u32>> {
        let tok = self.tokenizer()?;
        let text = if leading_space && tok.is_byte_level() {
            format!(" {word}")
        } else {
            word.to_string()
        };
        let ids = tok.encode_plain(&text)?;
        if ids.is_empty() {
            return Err(PrismError::Input(format!("{word:?} becomes no tokens")));
        }
        Ok(ids)
    }

    fn pieces(&self, ids: &[u32]) -> Vec<String> {
        let tok = self.model.tokenizer.as_ref();
        ids.iter()
            .map(|&i| {
                tok.and_then(|t| t.token_piece(i))
                    .unwrap_or_else(|| format!("<{i}>"))
            })
            .collect()
    }

    /// Vectors for `words` from `source`; contextual sources use `template` (which must contain `{}`).
    pub fn vectors(
        &mut self,
        words: &[String],
        source: Source,
        template: &str,
    ) -> Result<Vec<WordVector>> {
        if words.is_empty() {
            return Err(PrismError::Input("no words given".into()));
        }
        match source {
            Source::Embed | Source::EmbedNoSpace | Source::Unembed => {
                let mut out = Vec::with_capacity(words.len());
                for w in words {
                    let ids = self.word_ids(w, source != Source::EmbedNoSpace)?;
                    let pieces = self.pieces(&ids);
                    let table = if source == Source::Unembed {
                        self.unembedding_table()?
                    } else {
                        self.embedding_table()?
                    };
                    out.push(WordVector {
                        word: w.clone(),
                        vector: table.mean_of(&ids),
                        ids,
                        pieces,
                    });
                }
                Ok(out)
            }
            Source::Layer(_) | Source::FinalNorm => {
                let all = self.contextual_all(words, template)?;
                Ok(all
                    .into_iter()
                    .map(|(wv, layers, fin)| {
                        let vector = match source {
                            Source::Layer(l) => layers.get(l).cloned().unwrap_or_default(),
                            _ => fin,
                        };
                        WordVector { vector, ..wv }
                    })
                    .collect())
            }
        }
        .and_then(|v: Vec<WordVector>| {
            if let Source::Layer(l) = source {
                if l > self.model.spec.n_layers {
                    return Err(PrismError::Input(format!(
                        "layer {l} does not exist: the model has layers 0..={}",
                        self.model.spec.n_layers
                    )));
                }
            }
            Ok(v)
        })
    }

    /// One forward pass per word in the template, keeping every layer at the word's last token:
    /// (word with its template tokens, residual per layer, final hidden state).
    pub fn contextual_all(&mut self, words: &[String], template: &str) -> Result<Vec<Contextual>> {
        let Some(at) = template.find("{}") else {
            return Err(PrismError::Input(format!(
                "the template {template:?} has no {{}} for the word"
            )));
        };
        let tok = self.tokenizer()?;
        let mut out = Vec::with_capacity(words.len());
        for w in words {
            let text = template.replacen("{}", w, 1);
            let (ids, offsets) = tok.encode_with_offsets(&text, false)?;
            let (start, end) = (at, at + w.len());
            let word_tokens: Vec<usize> = offsets
                .iter()
                .enumerate()
                .filter(|(_, &(a, b))| b > a && a < end && b > start)
                .map(|(i, _)| i)
                .collect();
            let Some(&last) = word_tokens.last() else {
                return Err(PrismError::Input(format!(
                    "{w:?} is not visible as tokens in {text:?}"
                )));
            };
            crate::backend::check_ids(self.model, &ids)?;
            let trace = self.backend.run(&crate::backend::Request::residual(&ids))?;
            let h = trace.hidden;
            let residual = trace.residual.unwrap_or_default();
            let layers: Vec<Vec<f32>> = residual
                .iter()
                .map(|r| r[last * h..(last + 1) * h].to_vec())
                .collect();
            let fin = trace.final_hidden[last * h..(last + 1) * h].to_vec();
            let word_ids: Vec<u32> = word_tokens.iter().map(|&i| ids[i]).collect();
            let pieces = self.pieces(&word_ids);
            out.push((
                WordVector {
                    word: w.clone(),
                    ids: word_ids,
                    pieces,
                    vector: Vec::new(),
                },
                layers,
                fin,
            ));
        }
        Ok(out)
    }
}
