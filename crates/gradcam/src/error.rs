//! The library's error type. Every error that comes from a file names the file; every error about a value
//! names the value and what was expected.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{}: not a readable image: {msg}", path.display())]
    Image { path: PathBuf, msg: String },

    #[error("{}: {msg}", path.display())]
    Checkpoint { path: PathBuf, msg: String },

    #[error("{}: tensor `{name}` is missing from the checkpoint{hint}", path.display())]
    MissingTensor { path: PathBuf, name: String, hint: String },

    #[error("{}: tensor `{name}` has shape {found:?}, the model expects {expected:?}", path.display())]
    ShapeMismatch { path: PathBuf, name: String, expected: Vec<usize>, found: Vec<usize> },

    #[error("{0}")]
    Invalid(String),

    /// An error of the tensor library, without the backtrace candle attaches when `RUST_BACKTRACE` is set (a
    /// message for users, and a JSON field, must not carry one).
    #[error(transparent)]
    Candle(candle_core::Error),
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(strip_backtrace(e))
    }
}

/// `e` without the backtraces candle wraps around errors (at any depth of context).
pub fn strip_backtrace(e: candle_core::Error) -> candle_core::Error {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => strip_backtrace(*inner),
        E::Context { inner, context } => E::Context { inner: Box::new(strip_backtrace(*inner)), context },
        E::WithPath { inner, path } => E::WithPath { inner: Box::new(strip_backtrace(*inner)), path },
        e => e,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }
    pub fn checkpoint(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Checkpoint { path: path.as_ref().to_path_buf(), msg: msg.into() }
    }
    pub fn image(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Image { path: path.as_ref().to_path_buf(), msg: msg.into() }
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
}
