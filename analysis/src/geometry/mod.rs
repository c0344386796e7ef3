//! Embedding geometry: word vectors from any representation, similarity, nearest neighbours,
//! analogies, concept axes, projections (PCA, t-SNE), representational similarity analysis, and
//! the color study.

pub mod color;
pub mod presets;
pub mod project;
pub mod rsa;
pub mod similarity;
pub mod vectors;
