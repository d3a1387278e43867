//! A private certificate authority (made with the `openssl` CLI, as the Kubernetes harness does)
//! and a TLS-terminating relay signed by it: puts any loopback server behind
//! `https://localhost:<port>` with a certificate that only the private CA vouches for.

// Test harness: a failed setup step panics with its reason, which is the test's failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ServerConfig, crypto};

/// A CA and one server certificate for `localhost` and `127.0.0.1`, in a temporary folder.
#[derive(Debug)]
pub struct PrivateCa {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (is it installed?)");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivateCa {
    /// Makes the CA and the server certificate (ECDSA P-256).
    pub fn new() -> PrivateCa {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=vmcp test private CA"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(d, &ca);
        let mut csr = vec!["req", "-new", "-subj", "/CN=localhost"];
        csr.extend(ec);
        csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
        openssl(d, &csr);
        std::fs::write(
            d.join("server.ext"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        PrivateCa { dir }
    }

    /// The CA certificate (PEM): what a client must trust.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn acceptor(&self) -> TlsAcceptor {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(self.dir.path().join("server.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(self.dir.path().join("server.key")).unwrap();
        let config =
            ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }
}

impl Default for PrivateCa {
    fn default() -> Self {
        Self::new()
    }
}

/// `https://localhost:<port>` in front of `127.0.0.1:<upstream>` (plain TCP); stopped on drop.
#[derive(Debug)]
pub struct TlsRelay {
    /// The TLS port.
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl TlsRelay {
    /// Starts terminating TLS with `ca`'s server certificate and relaying to `upstream`.
    pub async fn start(ca: &PrivateCa, upstream: u16) -> TlsRelay {
        let acceptor = ca.acceptor();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(client).await else { return };
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                });
            }
        });
        TlsRelay { port, task }
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
