//! NumPy `.npy` files (float32, C order), the format of the golden files and of `--save-npy`.

use crate::error::{Error, Result};
use std::path::Path;

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

    /// Read a little-endian float32 (or float64, converted) C-order array.
    pub fn read(path: impl AsRef<Path>) -> Result<Array> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&bytes).map_err(|m| Error::invalid(format!("{}: not a supported .npy file: {m}", path.display())))
    }

    pub fn parse(b: &[u8]) -> std::result::Result<Array, String> {
        if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
            return Err("missing the \\x93NUMPY magic".into());
        }
        let (hlen, start) = match b[6] {
            1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
            2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
            v => return Err(format!("unsupported version {v}")),
        };
        let header = std::str::from_utf8(b.get(start..start + hlen).ok_or("truncated header")?)
            .map_err(|_| "header is not text")?;
        let field = |key: &str| -> Option<&str> {
            let i = header.find(&format!("'{key}'"))? + key.len() + 2;
            Some(header[i..].trim_start_matches([':', ' ']))
        };
        let descr = field("descr").ok_or("no descr")?;
        let elem = if descr.starts_with("'<f4'") {
            4
        } else if descr.starts_with("'<f8'") {
            8
        } else {
            return Err(format!(
                "dtype {} (expected '<f4' or '<f8')",
                &descr[..descr.find(',').unwrap_or(descr.len())]
            ));
        };
        if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
            return Err("Fortran order is not supported".into());
        }
        let shape_s = field("shape").ok_or("no shape")?;
        let shape_s = &shape_s[1..shape_s.find(')').ok_or("bad shape")?];
        let shape: Vec<usize> = shape_s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().map_err(|_| format!("bad dimension {s}")))
            .collect::<std::result::Result<_, _>>()?;
        let n: usize = shape.iter().product();
        let body = &b[start + hlen..];
        if body.len() < n * elem {
            return Err(format!("{} data bytes for {n} elements (truncated?)", body.len()));
        }
        let data = if elem == 4 {
            body[..n * 4].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        } else {
            body[..n * 8].chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32).collect()
        };
        Ok(Array { shape, data })
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
