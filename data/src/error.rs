//! Errors of the data pipeline. Each names the file (and line, where there is one) it is about.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    /// A file or folder could not be read or written.
    Io { path: PathBuf, source: std::io::Error },
    /// An annotation line that does not parse. `line` is 1-based; 0 when the file has no lines.
    Parse { path: PathBuf, line: usize, msg: String },
    /// A file whose structure is wrong as a whole (a MAT/HDF5 file, a mask of the wrong size...).
    Format { path: PathBuf, msg: String },
    /// Decoding or cropping an image failed.
    Image(crate::preprocess::Error),
    /// A request that cannot be served (unknown dataset or split, empty dataset...).
    Invalid(String),
    /// A tensor op failed (only on internal shape bugs).
    Tensor(tensor::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Parse { path, line, msg } => write!(f, "{}:{line}: {msg}", path.display()),
            Error::Format { path, msg } => write!(f, "{}: {msg}", path.display()),
            Error::Image(e) => write!(f, "{e}"),
            Error::Invalid(msg) => write!(f, "{msg}"),
            Error::Tensor(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Image(e) => Some(e),
            Error::Tensor(e) => Some(e),
            _ => None,
        }
    }
}

impl From<crate::preprocess::Error> for Error {
    fn from(e: crate::preprocess::Error) -> Self {
        Error::Image(e)
    }
}

impl From<tensor::Error> for Error {
    fn from(e: tensor::Error) -> Self {
        Error::Tensor(e)
    }
}

/// Read a whole file, naming it on failure.
pub fn read(path: impl Into<PathBuf>) -> Result<Vec<u8>> {
    let path = path.into();
    std::fs::read(&path).map_err(|source| Error::Io { path, source })
}

/// Read a whole text file, naming it on failure.
pub fn read_to_string(path: impl Into<PathBuf>) -> Result<String> {
    let path = path.into();
    std::fs::read_to_string(&path).map_err(|source| Error::Io { path, source })
}

pub type Result<T> = std::result::Result<T, Error>;
