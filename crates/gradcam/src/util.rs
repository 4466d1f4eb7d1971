//! Small helpers: whole-or-nothing file writes, a deterministic pseudo-random sequence.

use crate::error::Result;
use std::path::{Path, PathBuf};

/// A temporary name beside `path` (same folder, so that a rename is atomic).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let unique = format!(".{name}.{}.{}.tmp", std::process::id(), next_id());
    path.with_file_name(unique)
}

fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

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
