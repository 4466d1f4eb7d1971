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

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
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
