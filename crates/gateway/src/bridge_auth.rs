//! The bridge's caller check (M8): with `--auth-token-file`, every `/mcp` request must carry
//! `Authorization: Bearer <the file's token>`, compared in constant time; anything else gets
//! 401 with `WWW-Authenticate: Bearer`. `/healthz` stays open for probes.
//!
//! The operator generates one random token per stdio `MCPServer` (a Secret it owns), mounts it
//! into the bridge's pod and gives it to the gateway as that backend's `bearerToken`, so only
//! the gateway (not any pod of the cluster) can start stdio processes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// Why the token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BridgeAuthError {
    /// The file could not be read.
    #[error("--auth-token-file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file holds no token (only whitespace).
    #[error("--auth-token-file {0}: the file is empty")]
    Empty(PathBuf),
}

/// The token callers of the bridge must present.
#[derive(Clone)]
pub struct BridgeToken(Arc<SecretString>);

impl std::fmt::Debug for BridgeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BridgeToken(<redacted>)")
    }
}

impl BridgeToken {
    /// The token in `path` (surrounding whitespace and line ends trimmed, as a mounted Secret
    /// or `echo` leaves them).
    pub fn from_file(path: &Path) -> Result<Self, BridgeAuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| BridgeAuthError::Read { path: path.to_owned(), source })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(BridgeAuthError::Empty(path.to_owned()));
        }
        Ok(Self(Arc::new(SecretString::from(token.to_owned()))))
    }

    /// Does `headers` carry `Authorization: Bearer <token>`? Constant time in the token's
    /// content (a length mismatch fails early, which reveals only the length).
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else { return false };
        let Some((scheme, presented)) = value.as_bytes().split_first_chunk::<7>() else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return false;
        }
        let expected = self.0.expose_secret().as_bytes();
        bool::from(presented.ct_eq(expected))
    }
}

/// Middleware: refuses requests without the token (401, `WWW-Authenticate: Bearer`).
pub async fn require_token(
    State(token): State<BridgeToken>,
    request: Request,
    next: Next,
) -> Response {
    if token.admits(request.headers()) {
        return next.run(request).await;
    }
    tracing::warn!(
        method = %request.method(),
        "bridge request without the bridge token refused (401)"
    );
    let mut r = (StatusCode::UNAUTHORIZED, "the bridge needs its bearer token").into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn only_the_exact_token_is_admitted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret-token\n").unwrap();
        let t = BridgeToken::from_file(&path).unwrap();
        assert!(t.admits(&headers("Bearer s3cret-token")));
        assert!(t.admits(&headers("bearer s3cret-token")), "the scheme is case-insensitive");
        for wrong in [
            "Bearer s3cret-tokeN",
            "Bearer s3cret-token ",
            "Bearer s3cret",
            "Bearer ",
            "Basic s3cret-token",
            "s3cret-token",
        ] {
            assert!(!t.admits(&headers(wrong)), "{wrong} admitted");
        }
        assert!(!t.admits(&HeaderMap::new()), "no header");
        assert!(!format!("{t:?}").contains("s3cret"), "Debug never shows the token");
    }

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let e = BridgeToken::from_file(&empty).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = BridgeToken::from_file(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
