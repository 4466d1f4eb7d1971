//! Small helpers: whole-or-nothing file writes, a deterministic pseudo-random sequence.

use crate::error::Result;
use std::path::Path;

/// Write `bytes` to `path` whole or not at all (see [`crate::output`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::output::write_atomic(path, bytes)
}

/// Check what `path` is (following links) before reading it as `what`: a folder would fail late, a device
/// (`/dev/zero`) never end, and a pipe block (pipes are let through where `pipes` says so: a file read whole
/// from `<(…)`). Returns its metadata.
pub fn file_to_read(path: &Path, what: &str, pipes: bool) -> Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path).map_err(|e| crate::Error::io(path, e))?;
    #[cfg(unix)]
    let pipe = std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type());
    #[cfg(not(unix))]
    let pipe = false;
    if meta.is_dir() {
        return Err(crate::Error::invalid(format!("{}: is a directory, expected {what}", path.display())));
    }
    let readable = meta.is_file() || (pipes && pipe);
    if !readable {
        return Err(crate::Error::invalid(format!(
            "{}: not a regular file (a pipe, socket or device), expected {what}",
            path.display()
        )));
    }
    Ok(meta)
}

/// [`file_to_read`] without pipes: the size in bytes of the regular file at `path`.
pub fn regular_file(path: &Path, what: &str) -> Result<u64> {
    Ok(file_to_read(path, what, false)?.len())
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
