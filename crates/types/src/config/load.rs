//! Parsing a configuration document.

use std::path::Path;

use serde::Deserialize;

use super::GatewayConfig;
use super::error::{ConfigError, FieldError};

/// Parses and validates a YAML (or JSON) document. Shape errors (unknown fields, wrong types)
/// stop parsing at the first one, with its path and line; value errors are all returned
/// together.
pub fn from_yaml_str(text: &str) -> Result<GatewayConfig, ConfigError> {
    let mut track = serde_path_to_error::Track::new();
    let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
        GatewayConfig::deserialize(serde_path_to_error::Deserializer::new(de, &mut track))
    });
    let config = match parsed {
        Ok(c) => c,
        Err(e) => {
            let path = track.path().to_string();
            let path = if path == "." { "(document)".to_owned() } else { path };
            return Err(ConfigError::Parse(FieldError::new(path, e.to_string())));
        }
    };
    let errors = config.validate();
    if errors.is_empty() { Ok(config) } else { Err(ConfigError::Invalid(errors)) }
}

/// Reads, parses and validates a configuration file.
pub fn load_file(path: &Path) -> Result<GatewayConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    from_yaml_str(&text)
}
