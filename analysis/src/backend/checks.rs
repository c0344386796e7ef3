//! Input checks shared by every entry point: a text that fits the model, ids inside the
//! vocabulary (the forward pass uses the same check), a decoder where one is needed.

use crate::error::{PrismError, Result};
use crate::model::Model;

/// Refuses an encoder for `what` (generation, patching, ablation: they need next-token predictions).
pub fn require_causal(model: &Model, what: &str) -> Result<()> {
    if model.spec.causal {
        return Ok(());
    }
    Err(PrismError::Input(format!(
        "{what} needs a causal language model; {} is an encoder",
        model.spec.architecture
    )))
}

/// Refuses sequences a model cannot take, with a message that says why.
pub fn check_ids(model: &Model, ids: &[u32]) -> Result<()> {
    if ids.is_empty() {
        return Err(PrismError::Input(
            "the text is empty: there is nothing to run".into(),
        ));
    }
    if ids.len() > model.spec.context_length {
        return Err(PrismError::Input(format!(
            "the text is {} tokens long, but the model's context is {} tokens",
            ids.len(),
            model.spec.context_length
        )));
    }
    check_vocab(ids, model.spec.vocab)
}

/// Every id inside a vocabulary of `vocab` (the one check, for texts and for a backend's input).
pub fn check_vocab(ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().find(|&&i| i as usize >= vocab) {
        Some(bad) => Err(PrismError::Input(format!(
            "token id {bad} is outside the model's vocabulary of {vocab}"
        ))),
        None => Ok(()),
    }
}
