//! The secret files a backend's credential is read from, and a fingerprint of their content.
//!
//! The reloader ([`crate::config`]) re-reads these files: a backend whose files changed is
//! rebuilt (new credential, sessions kept), and a backend whose file does not exist yet is left
//! out until it does. Fingerprints are keyed SHA-256 digests with a random key per process, so
//! even a low-entropy secret cannot be guessed from one; they are compared, never logged.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use vmcp_types::config::{GatewayConfig, OutgoingAuthConfig, SecretSource};

/// A keyed digest of the content of some secret files (or of their absence).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprint(..)")
    }
}

/// A referenced secret file that does not exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingFile(pub PathBuf);

fn key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

fn hasher() -> Sha256 {
    let mut h = Sha256::new();
    h.update(key());
    h
}

fn file_source(s: &SecretSource) -> Option<&Path> {
    // An `env` source wins over `file` (see `read_secret`); validation allows only one.
    s.env.is_none().then_some(s.file.as_deref()).flatten()
}

/// The secret files `auth` reads: the bearer token, the header value, or the token-exchange
/// client secret, when it comes from a file.
pub fn credential_files(auth: &OutgoingAuthConfig) -> Vec<&Path> {
    let sources = [
        auth.bearer_token.as_ref().map(|b| &b.token),
        auth.header_injection.as_ref().map(|h| &h.value),
        auth.token_exchange.as_ref().map(|t| &t.client_secret),
    ];
    sources.into_iter().flatten().filter_map(file_source).collect()
}

/// Adds `path`'s name and content to `h`. A file that cannot be read for another reason than
/// absence adds that reason (building the credential then reports it).
fn add_file(h: &mut Sha256, path: &Path) -> Result<(), MissingFile> {
    let name = path.as_os_str().as_encoded_bytes();
    h.update((name.len() as u64).to_le_bytes());
    h.update(name);
    match std::fs::read(path) {
        Ok(content) => {
            h.update([1]);
            h.update((content.len() as u64).to_le_bytes());
            h.update(&content);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(MissingFile(path.to_owned())),
        Err(e) => {
            h.update([2]);
            h.update(format!("{:?}", e.kind()).as_bytes());
            Ok(())
        }
    }
}

/// The fingerprint of `auth`'s secret files, or the first one that does not exist.
pub fn credential_fingerprint(auth: &OutgoingAuthConfig) -> Result<Fingerprint, MissingFile> {
    let mut h = hasher();
    for path in credential_files(auth) {
        add_file(&mut h, path)?;
    }
    Ok(Fingerprint(h.finalize().into()))
}

/// The fingerprint of every secret file `cfg`'s backends read, missing ones included (as
/// missing): what the reloader compares from one check to the next.
pub fn watched_fingerprint(cfg: &GatewayConfig) -> Fingerprint {
    let mut h = hasher();
    for b in &cfg.backends {
        for path in credential_files(&b.auth) {
            if add_file(&mut h, path).is_err() {
                h.update([0]);
            }
        }
    }
    Fingerprint(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmcp_types::config::{BearerTokenAuth, HeaderInjectionAuth, OutgoingAuthType};

    fn bearer(path: &Path) -> OutgoingAuthConfig {
        OutgoingAuthConfig {
            auth_type: OutgoingAuthType::BearerToken,
            bearer_token: Some(BearerTokenAuth {
                token: SecretSource { env: None, file: Some(path.to_owned()) },
                wait_for_file: false,
            }),
            ..OutgoingAuthConfig::default()
        }
    }

    #[test]
    fn the_fingerprint_follows_the_content_and_names_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let auth = bearer(&path);
        assert_eq!(credential_fingerprint(&auth), Err(MissingFile(path.clone())));
        std::fs::write(&path, "one").unwrap();
        let one = credential_fingerprint(&auth).unwrap();
        assert_eq!(credential_fingerprint(&auth).unwrap(), one, "stable");
        std::fs::write(&path, "two").unwrap();
        let two = credential_fingerprint(&auth).unwrap();
        assert_ne!(one, two);
        assert_eq!(format!("{two:?}"), "Fingerprint(..)", "never printed");
        assert!(!format!("{two:?}").contains("two"));
    }

    #[test]
    fn env_sources_and_unauthenticated_backends_read_no_file() {
        let env = OutgoingAuthConfig {
            auth_type: OutgoingAuthType::HeaderInjection,
            header_injection: Some(HeaderInjectionAuth {
                header_name: "X-Key".into(),
                value: SecretSource { env: Some("KEY".into()), file: None },
            }),
            ..OutgoingAuthConfig::default()
        };
        assert!(credential_files(&env).is_empty());
        assert!(credential_files(&OutgoingAuthConfig::default()).is_empty());
        assert_eq!(credential_files(&bearer(Path::new("/t"))), [Path::new("/t")]);
    }
}
