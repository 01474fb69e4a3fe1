//! Errors of checkpoint loading. Every variant that comes from a file names it, and the place in
//! it (pickle offset, zip entry, key or global) where reading stopped.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum CheckpointError {
    /// The file could not be opened, mapped, read or written.
    Io { path: PathBuf, source: std::io::Error },
    /// The data ends before `what` is complete.
    Truncated { path: PathBuf, what: String, offset: u64 },
    /// The zip container is malformed, or an entry is compressed or missing.
    Zip { path: PathBuf, msg: String },
    /// The pickle asks for a global that is not on the allow-list; nothing was executed.
    ForbiddenGlobal { path: PathBuf, global: String, offset: usize },
    /// The pickle is malformed or uses something this reader does not support.
    BadPickle { path: PathBuf, offset: usize, msg: String },
    /// The unpickled object is not a state dict of tensors (or the requested key is absent).
    NotStateDict { path: PathBuf, msg: String },
    /// A safetensors file could not be parsed or written.
    Safetensors { path: PathBuf, msg: String },
    /// The state dict does not match the expected key set: every problem at once.
    Keys { missing: Vec<String>, unexpected: Vec<String>, misshaped: Vec<(String, Vec<usize>, Vec<usize>)> },
    /// The model configuration cannot be inferred from the shapes (or the side config is bad).
    Config { msg: String },
}

impl CheckpointError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CheckpointError::Io { path: path.into(), source }
    }
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            CheckpointError::Truncated { path, what, offset } => {
                write!(f, "{}: truncated: {what} runs past the end of the data (at byte {offset})", path.display())
            }
            CheckpointError::Zip { path, msg } => write!(f, "{}: zip: {msg}", path.display()),
            CheckpointError::ForbiddenGlobal { path, global, offset } => write!(
                f,
                "{}: pickle asks for global `{global}` at offset {offset}, which is not allowed in a checkpoint",
                path.display()
            ),
            CheckpointError::BadPickle { path, offset, msg } => {
                write!(f, "{}: bad pickle at offset {offset}: {msg}", path.display())
            }
            CheckpointError::NotStateDict { path, msg } => write!(f, "{}: not a state dict: {msg}", path.display()),
            CheckpointError::Safetensors { path, msg } => write!(f, "{}: safetensors: {msg}", path.display()),
            CheckpointError::Keys { missing, unexpected, misshaped } => {
                write!(
                    f,
                    "state dict does not match the model: {} missing, {} unexpected, {} with the wrong shape",
                    missing.len(),
                    unexpected.len(),
                    misshaped.len()
                )?;
                for k in missing {
                    write!(f, "\n  missing: {k}")?;
                }
                for k in unexpected {
                    write!(f, "\n  unexpected: {k}")?;
                }
                for (k, expected, got) in misshaped {
                    write!(f, "\n  wrong shape: {k}: expected {expected:?}, got {got:?}")?;
                }
                Ok(())
            }
            CheckpointError::Config { msg } => write!(f, "cannot infer the model config: {msg}"),
        }
    }
}

impl std::error::Error for CheckpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckpointError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, CheckpointError>;
