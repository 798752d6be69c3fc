//! One error type for the whole crate, split by concern (as `image` does), so the CLI can map
//! bad input to exit code 2 and internal failures to exit code 1.

use std::path::PathBuf;

/// Every way haste can fail. Messages are one line and name the file (and node, record or image).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model file is not a usable ONNX model (corrupt, inconsistent, bad attribute ...).
    #[error("{}: {message}", path.display())]
    Model { path: PathBuf, message: String },
    /// The model uses ops haste does not implement: each op type with its count and its first
    /// node (`ops`); every node in `nodes` (the CLI prints them with `--verbose`).
    #[error("{}: unsupported op(s): {ops}", path.display())]
    UnsupportedOps {
        path: PathBuf,
        ops: String,
        nodes: Vec<String>,
    },
    /// A dataset file, folder or image cannot be used.
    #[error("{}: {message}", path.display())]
    Dataset { path: PathBuf, message: String },
    /// A model card (`NAME.json`) is missing fields or holds nonsense.
    #[error("{}: {message}", path.display())]
    Card { path: PathBuf, message: String },
    /// Shapes do not fit (input of the wrong size for the model, mismatched operands ...).
    #[error("shape error: {0}")]
    Shape(String),
    /// A knob or flag is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A header or tensor claims a size beyond what haste accepts.
    #[error("{}: {message}", path.display())]
    Limits { path: PathBuf, message: String },
    /// A bug in haste, not a problem with the user's input.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Exit code for the CLI: 2 for bad input, 1 for internal errors.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Internal(_) => 1,
            _ => 2,
        }
    }

    /// Shorthand for an [`Error::Model`].
    pub fn model(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Shorthand for an [`Error::Dataset`].
    pub fn dataset(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Dataset {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Shorthand for an [`Error::Card`].
    pub fn card(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Card {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Shorthand for an [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with haste's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
