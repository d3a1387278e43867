//! Errors of loading a gateway configuration.

use std::fmt;
use std::path::PathBuf;

/// One problem in the configuration, at a field path such as `backends[1].url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `backends[1].auth.tokenExchange.tokenUrl`.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl FieldError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The document is not valid YAML or does not have the expected shape.
    #[error("{}", .0)]
    Parse(FieldError),
    /// The document parsed but some values are invalid; every problem is listed.
    #[error("{} invalid field(s):\n{}", .0.len(), list(.0))]
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    /// Every field problem (one for a parse error, none for a read error).
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            Self::Read { .. } => Vec::new(),
            Self::Parse(e) => vec![e.clone()],
            Self::Invalid(v) => v.clone(),
        }
    }
}

fn list(errors: &[FieldError]) -> String {
    errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n")
}
