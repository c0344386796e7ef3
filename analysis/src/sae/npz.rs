//! numpy's `.npz` as `np.savez` writes it: a zip (zip64 allowed) of stored, uncompressed `.npy`
//! arrays. Every offset and length is checked against the file before use.

use std::path::Path;

use crate::error::{PrismError, Result};

pub struct Array {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Array `name` of `arrays` (read from `path`), checked against `shape` (when given) and for
/// values that are not finite numbers.
pub fn take(
    arrays: &[Array],
    path: &Path,
    name: &str,
    shape: Option<&[usize]>,
) -> Result<Vec<f32>> {
    let bad = |m: String| PrismError::format(path, m);
    let a = arrays
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| bad(format!("no {name} array")))?;
    if let Some(shape) = shape.filter(|s| a.shape != *s) {
        return Err(bad(format!(
            "{name} has shape {:?}, expected {shape:?}",
            a.shape
        )));
    }
    if let Some(i) = a.values.iter().position(|x| !x.is_finite()) {
        return Err(bad(format!("{name}: value {i} is not a finite number")));
    }
    Ok(a.values.clone())
}

/// The shape of array `name`, if there is one.
pub fn shape_of<'a>(arrays: &'a [Array], name: &str) -> Option<&'a [usize]> {
    arrays.iter().find(|a| a.name == name).map(|a| &a.shape[..])
}

fn u16_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as u64)
}

fn u32_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as u64)
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Every array of the file, f32 (`<f4`, or `<f2`/`<f8` converted), C order.
pub fn read(path: &Path) -> Result<Vec<Array>> {
    let bytes = std::fs::read(path).map_err(|e| PrismError::io(path, e))?;
    let bad = |m: String| PrismError::format(path, format!("npz: {m}"));
    let b = &bytes[..];
    let cut = || bad("truncated or not a zip file".into());
    // The end of central directory record, and its zip64 form when the sizes overflow.
    let eocd = (0..b.len().saturating_sub(21))
        .rev()
        .take(65_557)
        .find(|&i| b[i..].starts_with(&[0x50, 0x4b, 0x05, 0x06]))
        .ok_or_else(cut)?;
    let (mut entries, mut cd_offset) = (
        u16_at(b, eocd + 10).ok_or_else(cut)?,
        u32_at(b, eocd + 16).ok_or_else(cut)?,
    );
    if entries == 0xffff || cd_offset == 0xffff_ffff {
        let loc = eocd.checked_sub(20).ok_or_else(cut)?;
        if !b[loc..].starts_with(&[0x50, 0x4b, 0x06, 0x07]) {
            return Err(bad("zip64 locator missing".into()));
        }
        let e64 = u64_at(b, loc + 8).ok_or_else(cut)? as usize;
        if !b
            .get(e64..)
            .is_some_and(|r| r.starts_with(&[0x50, 0x4b, 0x06, 0x06]))
        {
            return Err(bad("zip64 end record missing".into()));
        }
        entries = u64_at(b, e64 + 32).ok_or_else(cut)?;
        cd_offset = u64_at(b, e64 + 48).ok_or_else(cut)?;
    }
    if entries > 4096 {
        return Err(bad(format!("{entries} arrays")));
    }
    let mut out = Vec::new();
    let mut at = cd_offset as usize;
    for _ in 0..entries {
        if !b
            .get(at..)
            .is_some_and(|r| r.starts_with(&[0x50, 0x4b, 0x01, 0x02]))
        {
            return Err(bad("central directory entry missing".into()));
        }
        let method = u16_at(b, at + 10).ok_or_else(cut)?;
        let mut size = u32_at(b, at + 20).ok_or_else(cut)?;
        let mut usize_ = u32_at(b, at + 24).ok_or_else(cut)?;
        let (n, e, c) = (
            u16_at(b, at + 28).ok_or_else(cut)? as usize,
            u16_at(b, at + 30).ok_or_else(cut)? as usize,
            u16_at(b, at + 32).ok_or_else(cut)? as usize,
        );
        let mut local = u32_at(b, at + 42).ok_or_else(cut)?;
        let name = b.get(at + 46..at + 46 + n).ok_or_else(cut)?;
        let name = String::from_utf8_lossy(name).to_string();
        // The zip64 extra field holds the sizes and offset that did not fit.
        let mut x = at + 46 + n;
        let end = x + e;
        while x + 4 <= end {
            let (id, len) = (
                u16_at(b, x).ok_or_else(cut)?,
                u16_at(b, x + 2).ok_or_else(cut)? as usize,
            );
            if id == 1 {
                let mut p = x + 4;
                for v in [&mut usize_, &mut size, &mut local] {
                    if *v == 0xffff_ffff {
                        *v = u64_at(b, p).ok_or_else(cut)?;
                        p += 8;
                    }
                }
            }
            x += 4 + len;
        }
        at = end + c;
        if method != 0 || size != usize_ {
            return Err(bad(format!(
                "{name} is compressed (np.savez_compressed); Prism reads np.savez's stored arrays"
            )));
        }
        let l = local as usize;
        if !b
            .get(l..)
            .is_some_and(|r| r.starts_with(&[0x50, 0x4b, 0x03, 0x04]))
        {
            return Err(bad(format!("{name}: local header missing")));
        }
        let start = l
            + 30
            + u16_at(b, l + 26).ok_or_else(cut)? as usize
            + u16_at(b, l + 28).ok_or_else(cut)? as usize;
        let data = b.get(start..start + size as usize).ok_or_else(cut)?;
        let name = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        let (shape, values) = npy(data).map_err(|m| bad(format!("{name}: {m}")))?;
        out.push(Array {
            name,
            shape,
            values,
        });
    }
    Ok(out)
}

/// One `.npy` array.
fn npy(d: &[u8]) -> std::result::Result<(Vec<usize>, Vec<f32>), String> {
    if !d.starts_with(b"\x93NUMPY") || d.len() < 10 {
        return Err("not a .npy array".into());
    }
    let (len, at) = match d[6] {
        1 => (u16_at(d, 8).ok_or("truncated")? as usize, 10),
        2 | 3 => (u32_at(d, 8).ok_or("truncated")? as usize, 12),
        v => return Err(format!(".npy version {v}")),
    };
    let header = std::str::from_utf8(d.get(at..at + len).ok_or("truncated header")?)
        .map_err(|_| "header is not text")?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))? + key.len() + 2;
        Some(header[i..].trim_start().strip_prefix(':')?.trim_start())
    };
    let descr = field("descr").ok_or("no descr")?;
    let width = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f2'") {
        2
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        return Err(format!(
            "dtype {} (Prism reads little-endian floats)",
            descr.split(',').next().unwrap_or("")
        ));
    };
    if !field("fortran_order")
        .ok_or("no fortran_order")?
        .starts_with("False")
    {
        return Err("Fortran-ordered array".into());
    }
    let shape = field("shape").ok_or("no shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("bad shape")?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape {inner:?}"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .ok_or("shape overflows")?;
    let raw = d.get(at + len..).ok_or("no data")?;
    if raw.len() != count * width {
        return Err(format!("{} bytes for {count} values", raw.len()));
    }
    let values = match width {
        4 => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        2 => raw
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
    };
    Ok((shape, values))
}
