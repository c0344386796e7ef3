//! `prism tokenize`: a text's token ids and pieces, from the model's tokenizer alone.

use clap::Args;
use prism_analysis::checkpoint;
use serde_json::json;

use super::{model_path, read_text, ModelArg};

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The text to tokenize.
    #[arg(long, conflicts_with = "file")]
    pub text: Option<String>,
    /// Read the text from a file (UTF-8).
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Add the model's BOS/EOS and read special tokens written in the text as special tokens.
    #[arg(long)]
    pub special: bool,
    /// Print `{"ids": [..], "pieces": [..]}` instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn tokenize(a: TokenizeArgs) -> anyhow::Result<()> {
    let text = read_text(&a.text, &a.file)?;
    let path = model_path(&a.model.model)?;
    let tok = checkpoint::load_tokenizer(&path)?;
    let ids = tok.tokenize(&text, a.special)?;
    let pieces: Vec<String> = ids
        .iter()
        .map(|&id| tok.token_piece(id).unwrap_or_else(|| format!("<{id}>")))
        .collect();
    if a.json {
        println!("{}", json!({ "ids": ids, "pieces": pieces }));
        return Ok(());
    }
    println!("{:>6}  {:>8}  piece", "index", "id");
    for (i, (id, piece)) in ids.iter().zip(&pieces).enumerate() {
        println!("{i:>6}  {id:>8}  {piece:?}");
    }
    println!("{} tokens for {} bytes", ids.len(), text.len());
    Ok(())
}
