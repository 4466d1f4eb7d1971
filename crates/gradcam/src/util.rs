//! Small helpers: whole-or-nothing file writes, a deterministic pseudo-random sequence.

use crate::error::Result;
use std::path::Path;

/// Write `bytes` to `path` whole or not at all (see [`crate::output`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::output::write_atomic(path, bytes)
}

/// Check that `path` is a regular file (following links) before reading it as `what`: a folder, a FIFO or a
/// device (`/dev/zero`) would fail late, block forever or never end. Returns its size in bytes.
pub fn regular_file(path: &Path, what: &str) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| crate::Error::io(path, e))?;
    if meta.is_dir() {
        return Err(crate::Error::invalid(format!("{}: is a folder, expected {what}", path.display())));
    }
    if !meta.is_file() {
        return Err(crate::Error::invalid(format!(
            "{}: not a regular file (a pipe, socket or device), expected {what}",
            path.display()
        )));
    }
    Ok(meta.len())
}

/// `n` deterministic pseudo-random values in [0, 1) from xorshift64 started at `state` (non-zero): bench
/// inputs and test data.
pub fn xorshift_unit(mut state: u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}
