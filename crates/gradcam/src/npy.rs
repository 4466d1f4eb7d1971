//! NumPy `.npy` files (float32, C order), the format of the golden files and of `--save-npy`.

use crate::error::{Error, Result};
use std::path::Path;

/// The longest header read: numpy writes a few hundred bytes (and itself refuses more than 10,000 by default).
const MAX_HEADER: usize = 1 << 20;

/// What a header says: the shape, the element size, where the data starts and how many bytes it takes.
struct Header {
    shape: Vec<usize>,
    elem: usize,
    end: usize,
    need: usize,
}

/// A float32 array.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Array {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Array { shape, data }
    }

    /// Read a little-endian float32 (or float64, converted) C-order array. The file's size is checked against
    /// its header (shape and dtype) before the rest is read.
    pub fn read(path: impl AsRef<Path>) -> Result<Array> {
        let path = path.as_ref();
        let bytes = crate::checkpoint::read_regular_file(path, |p| {
            let not = |m: String| format!("not a supported .npy file: {m}");
            let len = p.len();
            let pre = p.head(12)?;
            if !pre.starts_with(b"\x93NUMPY") {
                return Err(not("missing the \\x93NUMPY magic".into()));
            }
            let Some(len) = len else { return Ok(()) };
            let (start, hlen) = Self::preamble(pre).map_err(not)?;
            let head = p.head(start.saturating_add(hlen))?;
            let h = Self::header(head).map_err(not)?;
            let body = len.saturating_sub(h.end as u64);
            if body != h.need as u64 {
                return Err(not(Self::body_mismatch(body, &h)));
            }
            Ok(())
        })?;
        Self::parse(&bytes).map_err(|m| Error::invalid(format!("{}: not a supported .npy file: {m}", path.display())))
    }

    /// The header's start and length, from the preamble.
    fn preamble(b: &[u8]) -> std::result::Result<(usize, usize), String> {
        let (hlen, start): (usize, usize) = match (b.get(6).copied(), b.get(8..10), b.get(8..12)) {
            (Some(1), Some(n), _) => (u16::from_le_bytes([n[0], n[1]]) as usize, 10),
            (Some(2 | 3), _, Some(n)) => (u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize, 12),
            (Some(v @ 1..=3), _, _) => {
                return Err(format!("{} bytes, too short for the preamble of a version {v} file", b.len()))
            }
            (Some(v), _, _) => return Err(format!("unsupported version {v} (expected 1, 2 or 3)")),
            (None, _, _) => return Err(format!("{} bytes, too short for a .npy file", b.len())),
        };
        if hlen > MAX_HEADER {
            return Err(format!(
                "the header announces {hlen} bytes, expected at most {MAX_HEADER} (numpy writes a few hundred)"
            ));
        }
        Ok((start, hlen))
    }

    /// The header at the start of `b` (which may hold more).
    fn header(b: &[u8]) -> std::result::Result<Header, String> {
        let (start, hlen) = Self::preamble(b)?;
        let end = start.checked_add(hlen).filter(|&e| e <= b.len()).ok_or_else(|| {
            format!(
                "the header announces {hlen} bytes, the file has {} after the preamble (truncated?)",
                b.len() - start
            )
        })?;
        let header = std::str::from_utf8(&b[start..end]).map_err(|_| "the header is not text")?;
        // The value after `'key':`, up to the end of the header.
        let field = |key: &str| -> Option<&str> {
            let i = header.find(&format!("'{key}'"))? + key.len() + 2;
            Some(header.get(i..)?.trim_start_matches([':', ' ']))
        };
        let clip = |s: &str| s.chars().take_while(|&c| c != ',' && c != '}').take(20).collect::<String>();
        let descr = field("descr").ok_or("the header has no 'descr'")?;
        let elem = if descr.starts_with("'<f4'") {
            4
        } else if descr.starts_with("'<f8'") {
            8
        } else {
            return Err(format!("dtype {} (expected '<f4' or '<f8')", clip(descr)));
        };
        if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
            return Err("Fortran order is not supported".into());
        }
        let shape_s = field("shape").ok_or("the header has no 'shape'")?;
        let inner = shape_s
            .strip_prefix('(')
            .and_then(|s| s.find(')').map(|i| &s[..i]))
            .ok_or_else(|| format!("shape {} (expected a tuple such as (3, 224, 224))", clip(shape_s)))?;
        let shape: Vec<usize> = inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().map_err(|_| format!("dimension {} (expected a count)", clip(s))))
            .collect::<std::result::Result<_, _>>()?;
        // The non-zero sizes must multiply without overflow too (candle makes strides from them).
        shape
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("shape {shape:?}: the element count overflows"))?;
        let n = shape.iter().product::<usize>();
        let need = n.checked_mul(elem).ok_or_else(|| format!("shape {shape:?}: the byte count overflows"))?;
        Ok(Header { shape, elem, end, need })
    }

    fn body_mismatch(body: u64, h: &Header) -> String {
        format!(
            "{body} data bytes, the shape {:?} of {}-byte elements needs {}{}",
            h.shape,
            h.elem,
            h.need,
            if body < h.need as u64 { " (truncated?)" } else { "" }
        )
    }

    /// Parse `.npy` bytes. Nothing in them is trusted: the header length, the shape and the element count are
    /// checked (no overflow) against the bytes present, and the data must be exactly what the shape needs.
    pub fn parse(b: &[u8]) -> std::result::Result<Array, String> {
        if !b.starts_with(b"\x93NUMPY") {
            return Err("missing the \\x93NUMPY magic".into());
        }
        let h = Self::header(b)?;
        let body = &b[h.end..];
        if body.len() != h.need {
            return Err(Self::body_mismatch(body.len() as u64, &h));
        }
        // n elements of `elem` bytes are present: the allocation is bounded by the file.
        let data = if h.elem == 4 {
            body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        } else {
            body.chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect()
        };
        Ok(Array { shape: h.shape, data })
    }

    /// The `.npy` bytes (version 1.0, '<f4', C order).
    pub fn to_bytes(&self) -> Vec<u8> {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
        let mut h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = Vec::with_capacity(10 + h.len() + self.data.len() * 4);
        out.extend_from_slice(b"\x93NUMPY\x01\x00");
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        for v in &self.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Write whole or not at all.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::util::write_atomic(path.as_ref(), &self.to_bytes())
    }

    pub fn to_tensor(&self, dev: &candle_core::Device) -> Result<candle_core::Tensor> {
        Ok(candle_core::Tensor::from_vec(self.data.clone(), self.shape.clone(), dev)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let a = Array::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5]);
        let b = a.to_bytes();
        assert_eq!((b.len() - 24) % 64, 0); // header padded to a multiple of 64, then 24 data bytes
        assert_eq!(Array::parse(&b).unwrap(), a);
        assert!(Array::parse(b"not npy").is_err());
        assert!(Array::parse(&b[..b.len() - 3]).is_err());
    }
}
