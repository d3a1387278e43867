//! Signature verification of incoming JWTs on `ring`.
//!
//! `jsonwebtoken`'s `rust_crypto` provider verifies RSA signatures with `num-bigint-dig`:
//! `make bench` (oidc scenario) showed 40 % of the gateway's CPU in its Montgomery
//! multiplication, about 0.2 ms per request. `ring` (already linked for TLS) verifies the
//! same signature in a fraction of that. This provider keeps `jsonwebtoken` for parsing and
//! claim validation and hands it `ring` verifiers for every asymmetric algorithm; HMAC,
//! signing (unit tests only) and key utilities stay with the `rust_crypto` provider.

use std::sync::LazyLock;

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, rust_crypto};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use ring::signature::{
    self as sig, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm,
};

/// The provider the gateway installs: `ring` for RSA, RSA-PSS, ECDSA and Ed25519.
pub static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory: rust_crypto::DEFAULT_PROVIDER.signer_factory,
    verifier_factory: new_verifier,
    key_utils: rust_crypto::DEFAULT_PROVIDER.key_utils.clone(),
});

/// Installs [`PROVIDER`] as the process default (a no-op when one is installed already, as
/// with several gateways in one test process).
pub fn install() {
    let provider: &'static CryptoProvider = &PROVIDER;
    let _ = provider.install_default();
}

/// `ring`'s RSA verification for the RSA algorithms (keys come as modulus + exponent).
fn rsa_parameters(alg: Algorithm) -> Option<&'static sig::RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// `ring`'s verification for every asymmetric algorithm, keys in their encoded form (RSA as
/// PKCS#1 DER, EC as an uncompressed point, Ed25519 raw).
fn encoded_key_algorithm(alg: Algorithm) -> Option<&'static dyn VerificationAlgorithm> {
    if let Some(rsa) = rsa_parameters(alg) {
        return Some(rsa);
    }
    Some(match alg {
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &sig::ED25519,
        _ => return None,
    })
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let Some(algorithm) = encoded_key_algorithm(*alg) else {
        // HMAC.
        return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(alg, key);
    };
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let key = match (key.kind(), rsa_parameters(*alg)) {
        (DecodingKeyKind::RsaModulusExponent { n, e }, Some(params)) => {
            RingKey::Rsa { params, n: n.clone(), e: e.clone() }
        }
        (DecodingKeyKind::RsaModulusExponent { .. }, None) => {
            return Err(ErrorKind::InvalidKeyFormat.into());
        }
        (DecodingKeyKind::SecretOrDer(bytes), _) => RingKey::Encoded(algorithm, bytes.clone()),
    };
    Ok(Box::new(RingVerifier { alg: *alg, key }))
}

enum RingKey {
    Rsa { params: &'static sig::RsaParameters, n: Vec<u8>, e: Vec<u8> },
    Encoded(&'static dyn VerificationAlgorithm, Vec<u8>),
}

struct RingVerifier {
    alg: Algorithm,
    key: RingKey,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let ok = match &self.key {
            RingKey::Rsa { params, n, e } => {
                RsaPublicKeyComponents { n, e }.verify(params, msg, signature).is_ok()
            }
            RingKey::Encoded(algorithm, bytes) => {
                UnparsedPublicKey::new(*algorithm, bytes).verify(msg, signature).is_ok()
            }
        };
        if ok { Ok(()) } else { Err(signature::Error::new()) }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, Validation, decode, encode};

    fn roundtrip(alg: Algorithm, enc: &EncodingKey, dec: &DecodingKey) -> bool {
        install();
        let claims = serde_json::json!({"sub": "alice", "exp": 4_000_000_000u64});
        let token = encode(&Header::new(alg), &claims, enc).unwrap();
        let mut v = Validation::new(alg);
        v.required_spec_claims.clear();
        v.validate_aud = false;
        let good = decode::<serde_json::Value>(&token, dec, &v).is_ok();
        // One flipped signature byte must fail.
        let (head, sig_b64) = token.rsplit_once('.').unwrap();
        let mut s = sig_b64.as_bytes().to_vec();
        s[3] = if s[3] == b'A' { b'B' } else { b'A' };
        let tampered = format!("{head}.{}", String::from_utf8(s).unwrap());
        let bad = decode::<serde_json::Value>(&tampered, dec, &v).is_ok();
        good && !bad
    }

    #[test]
    fn ed25519_tokens_verify_and_tampered_ones_do_not() {
        let seed = [7u8; 32];
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        // PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410).
        let mut der = hex::decode("302e020100300506032b657004220420").unwrap();
        der.extend_from_slice(&seed);
        let enc = EncodingKey::from_ed_der(&der);
        let dec = DecodingKey::from_ed_der(&public);
        assert!(roundtrip(Algorithm::EdDSA, &enc, &dec));
    }

    #[test]
    fn hmac_stays_with_rust_crypto() {
        let enc = EncodingKey::from_secret(b"secret");
        let dec = DecodingKey::from_secret(b"secret");
        assert!(roundtrip(Algorithm::HS256, &enc, &dec));
    }

    #[test]
    fn a_key_of_another_family_is_refused() {
        install();
        let dec = DecodingKey::from_secret(b"secret");
        assert!((PROVIDER.verifier_factory)(&Algorithm::RS256, &dec).is_err());
    }
}
