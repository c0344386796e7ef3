//! Builders for malformed checkpoints: a raw GGUF writer that can lie about anything, and helpers
//! that damage good files. Everything is generated; no broken binaries are committed.

use std::path::Path;

/// A GGUF value as raw bytes: (type id, payload).
pub enum Kv {
    U32(u32),
    U64(u64),
    F32(f32),
    Str(String),
    /// A string whose length prefix lies.
    StrLen(u64),
    StrArray(Vec<String>),
    /// An array header claiming `n` elements of `ty`, with no payload.
    ArrayClaim(u32, u64),
}

pub struct RawTensor {
    pub name: String,
    pub ne: Vec<u64>,
    pub ty: u32,
    pub offset: u64,
}

/// Writes a GGUF v3 file exactly as described, true or not.
pub struct GgufBuilder {
    pub magic: [u8; 4],
    pub version: u32,
    pub tensor_count: Option<u64>,
    pub kv_count: Option<u64>,
    pub kvs: Vec<(String, Kv)>,
    pub tensors: Vec<RawTensor>,
    pub data_len: usize,
    pub alignment: u64,
}

impl Default for GgufBuilder {
    fn default() -> Self {
        GgufBuilder {
            magic: *b"GGUF",
            version: 3,
            tensor_count: None,
            kv_count: None,
            kvs: Vec::new(),
            tensors: Vec::new(),
            data_len: 0,
            alignment: 32,
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl GgufBuilder {
    /// A plausible tiny llama header (hidden 32, 1 layer) with F32 tensors of the right sizes.
    pub fn tiny_llama() -> GgufBuilder {
        let mut b = GgufBuilder::default();
        for (k, v) in [
            ("general.architecture", Kv::Str("llama".into())),
            ("llama.context_length", Kv::U32(16)),
            ("llama.embedding_length", Kv::U32(32)),
            ("llama.block_count", Kv::U32(1)),
            ("llama.feed_forward_length", Kv::U32(64)),
            ("llama.attention.head_count", Kv::U32(2)),
            ("llama.attention.head_count_kv", Kv::U32(2)),
            ("llama.rope.freq_base", Kv::F32(10000.0)),
            ("llama.attention.layer_norm_rms_epsilon", Kv::F32(1e-5)),
        ] {
            b.kvs.push((k.to_string(), v));
        }
        let shapes: Vec<(&str, Vec<u64>)> = vec![
            ("token_embd.weight", vec![32, 40]),
            ("blk.0.attn_norm.weight", vec![32]),
            ("blk.0.attn_q.weight", vec![32, 32]),
            ("blk.0.attn_k.weight", vec![32, 32]),
            ("blk.0.attn_v.weight", vec![32, 32]),
            ("blk.0.attn_output.weight", vec![32, 32]),
            ("blk.0.ffn_norm.weight", vec![32]),
            ("blk.0.ffn_gate.weight", vec![32, 64]),
            ("blk.0.ffn_up.weight", vec![32, 64]),
            ("blk.0.ffn_down.weight", vec![64, 32]),
            ("output_norm.weight", vec![32]),
        ];
        let mut offset = 0u64;
        for (name, ne) in shapes {
            let bytes = ne.iter().product::<u64>() * 4;
            b.tensors.push(RawTensor {
                name: name.into(),
                ne,
                ty: 0,
                offset,
            });
            offset += bytes.div_ceil(32) * 32;
        }
        b.data_len = offset as usize;
        b
    }

    pub fn set(&mut self, key: &str, v: Kv) {
        self.kvs.retain(|(k, _)| k != key);
        self.kvs.push((key.to_string(), v));
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(self.magic);
        out.extend(self.version.to_le_bytes());
        out.extend(
            self.tensor_count
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        out.extend(self.kv_count.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        for (k, v) in &self.kvs {
            put_str(&mut out, k);
            match v {
                Kv::U32(x) => {
                    out.extend(4u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                Kv::U64(x) => {
                    out.extend(10u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                Kv::F32(x) => {
                    out.extend(6u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                Kv::Str(s) => {
                    out.extend(8u32.to_le_bytes());
                    put_str(&mut out, s);
                }
                Kv::StrLen(n) => {
                    out.extend(8u32.to_le_bytes());
                    out.extend(n.to_le_bytes());
                }
                Kv::StrArray(items) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(8u32.to_le_bytes());
                    out.extend((items.len() as u64).to_le_bytes());
                    for s in items {
                        put_str(&mut out, s);
                    }
                }
                Kv::ArrayClaim(ty, n) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(ty.to_le_bytes());
                    out.extend(n.to_le_bytes());
                }
            }
        }
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend((t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.to_le_bytes());
            out.extend(t.offset.to_le_bytes());
        }
        let align = self.alignment.max(1) as usize;
        while out.len() % align != 0 {
            out.push(0);
        }
        // Small deterministic non-zero weights.
        out.extend((0..self.data_len).map(|i| if i % 4 == 3 { 0x3c } else { 0 }));
        out
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).expect("write gguf");
    }
}

/// Copies `src` to `dst`, keeping only the first `keep` bytes.
pub fn truncated_copy(src: &Path, dst: &Path, keep: usize) {
    let bytes = std::fs::read(src).expect("read");
    std::fs::write(dst, &bytes[..keep.min(bytes.len())]).expect("write");
}

/// Copies an HF folder's files (not recursive).
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("dir");
    for e in std::fs::read_dir(src).expect("read dir").flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).expect("copy");
        }
    }
}

/// Copies a real GGUF file with its metadata edited by `edit` (tensors unchanged).
pub fn rewrite_gguf(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut Vec<(String, prism_analysis::gguf::Value)>),
) {
    use prism_analysis::gguf::{self, WriteTensor};
    let f = gguf::open(src).expect("a readable GGUF");
    let mut meta: Vec<(String, gguf::Value)> = f
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    meta.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut meta);
    let map = f.map().clone();
    let tensors: Vec<WriteTensor<'_>> = f
        .tensors
        .iter()
        .map(|t| WriteTensor {
            name: &t.name,
            ne: t.ne.clone(),
            ggml_type: t.ggml_type,
            data: &map[t.start as usize..(t.start + t.bytes) as usize],
        })
        .collect();
    let meta_refs: Vec<(&str, gguf::Value)> =
        meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    gguf::write(dst, &meta_refs, &tensors).expect("write the edited GGUF");
}

/// Sets (or adds) a metadata key in an editable list.
pub fn set_meta(
    meta: &mut Vec<(String, prism_analysis::gguf::Value)>,
    key: &str,
    v: prism_analysis::gguf::Value,
) {
    meta.retain(|(k, _)| k != key);
    meta.push((key.to_string(), v));
}
