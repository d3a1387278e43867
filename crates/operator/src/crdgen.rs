//! CRD generation: every CRD of the API rendered as YAML (`vmcp-operator crds`).

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use vmcp_types::crd::all_crds;

/// Why CRDs could not be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum CrdgenError {
    /// YAML serialization failed.
    #[error("cannot render CRD {name} as YAML: {source}")]
    Render {
        /// CRD name.
        name: String,
        /// The serializer's error.
        source: serde_saphyr::ser_error::Error,
    },
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// File name of a CRD in `config/crd/`: `<group>_<plural>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// One CRD as a YAML document.
pub fn render(crd: &CustomResourceDefinition) -> Result<String, CrdgenError> {
    serde_saphyr::to_string(crd).map_err(|source| CrdgenError::Render {
        name: crd.metadata.name.clone().unwrap_or_default(),
        source,
    })
}

/// Every CRD as `(file name, YAML)`.
pub fn render_all() -> Result<Vec<(String, String)>, CrdgenError> {
    all_crds().iter().map(|crd| Ok((file_name(crd), render(crd)?))).collect()
}

/// Every CRD as one multi-document YAML stream.
pub fn render_stream() -> Result<String, CrdgenError> {
    Ok(render_all()?.into_iter().map(|(_, y)| format!("---\n{y}")).collect())
}

/// Writes every CRD into `dir` (one file each).
pub fn write_all(dir: &Path) -> Result<Vec<PathBuf>, CrdgenError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| CrdgenError::Write { path: dir.to_owned(), source })?;
    let mut written = Vec::new();
    for (name, yaml) in render_all()? {
        let path = dir.join(name);
        std::fs::write(&path, yaml)
            .map_err(|source| CrdgenError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}
