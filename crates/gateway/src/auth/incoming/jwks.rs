//! A JSON Web Key Set reduced to the keys that can verify signatures.
//!
//! Keys with `use` other than `sig` (Keycloak publishes an `enc` RSA-OAEP key), with `key_ops`
//! lacking `verify`, with an `alg` that is not a JWS algorithm, or of an unsupported type or
//! curve are skipped, never an error: one odd key must not take the whole set down.

use std::str::FromStr;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::Value;

/// One verification key.
pub(crate) struct VerifyKey {
    pub(crate) kid: Option<String>,
    family: AlgorithmFamily,
    /// For EC keys: the only algorithm the curve allows (ES256 for P-256, ES384 for P-384).
    curve_alg: Option<Algorithm>,
    /// The JWK's own `alg`, when it declares one.
    alg: Option<Algorithm>,
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey").field("kid", &self.kid).field("family", &self.family).finish()
    }
}

impl VerifyKey {
    /// Can this key verify a signature made with `alg`?
    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        alg.family() == self.family
            && self.curve_alg.is_none_or(|c| c == alg)
            && self.alg.is_none_or(|a| a == alg)
    }
}

/// The signature keys of one JWKS document.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    pub(crate) keys: Vec<VerifyKey>,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys":[…]}`), keeping the usable signature keys.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, String> {
        let doc: Value =
            serde_json::from_slice(body).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
        let keys =
            doc.get("keys").and_then(Value::as_array).ok_or("the JWKS has no `keys` array")?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            match parse_key(k) {
                Ok(Some(key)) => out.push(key),
                Ok(None) => {}
                Err(why) => tracing::debug!(kid = ?k.get("kid"), "ignoring a JWKS key: {why}"),
            }
        }
        Ok(Self { keys: out })
    }

    /// The keys that may have signed a token with this `kid` and `alg`. Without a `kid`, every
    /// key that accepts `alg`.
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.accepts(alg) && (kid.is_none() || k.kid.as_deref() == kid))
    }

    /// The `kid`s (for logs).
    pub(crate) fn kids(&self) -> Vec<&str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref()).collect()
    }
}

fn str_field<'a>(k: &'a Value, name: &str) -> Option<&'a str> {
    k.get(name).and_then(Value::as_str)
}

/// `Ok(None)`: not a signature key (skipped silently).
fn parse_key(k: &Value) -> Result<Option<VerifyKey>, String> {
    if let Some(u) = k.get("use")
        && u.as_str() != Some("sig")
    {
        return Ok(None);
    }
    if let Some(ops) = k.get("key_ops").and_then(Value::as_array)
        && !ops.iter().any(|o| o.as_str() == Some("verify"))
    {
        return Ok(None);
    }
    let alg = match str_field(k, "alg") {
        None => None,
        Some(a) => match Algorithm::from_str(a) {
            Ok(a) if a.family() != AlgorithmFamily::Hmac => Some(a),
            // An encryption algorithm (RSA-OAEP, …) or HMAC: not a signature key for us.
            _ => return Ok(None),
        },
    };
    let need = |name: &str| str_field(k, name).ok_or_else(|| format!("missing `{name}`"));
    let bad = |e: jsonwebtoken::errors::Error| format!("unusable key material: {e}");
    let (family, curve_alg, key) = match str_field(k, "kty") {
        Some("RSA") => (
            AlgorithmFamily::Rsa,
            None,
            DecodingKey::from_rsa_components(need("n")?, need("e")?).map_err(bad)?,
        ),
        Some("EC") => {
            let curve = match need("crv")? {
                "P-256" => Algorithm::ES256,
                "P-384" => Algorithm::ES384,
                other => return Err(format!("unsupported EC curve {other}")),
            };
            let key = DecodingKey::from_ec_components(need("x")?, need("y")?).map_err(bad)?;
            (AlgorithmFamily::Ec, Some(curve), key)
        }
        Some("OKP") => {
            if need("crv")? != "Ed25519" {
                return Err("unsupported OKP curve".into());
            }
            (AlgorithmFamily::Ed, None, DecodingKey::from_ed_components(need("x")?).map_err(bad)?)
        }
        Some(other) => return Err(format!("unsupported key type {other}")),
        None => return Err("missing `kty`".into()),
    };
    if alg.is_some_and(|a| a.family() != family) {
        return Err("`alg` does not match `kty`".into());
    }
    Ok(Some(VerifyKey { kid: str_field(k, "kid").map(str::to_owned), family, curve_alg, alg, key }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_signature_keys_only() {
        // Shaped like Keycloak's certs endpoint: one `sig` RS256 key and one `enc` RSA-OAEP key.
        let n = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";
        let doc = serde_json::json!({"keys":[
            {"kid":"sig1","kty":"RSA","alg":"RS256","use":"sig","n":n,"e":"AQAB"},
            {"kid":"enc1","kty":"RSA","alg":"RSA-OAEP","use":"enc","n":n,"e":"AQAB"},
            {"kid":"noalg","kty":"RSA","n":n,"e":"AQAB"},
            {"kid":"hmac","kty":"oct","k":"c2VjcmV0"},
            {"kid":"weird","kty":"EC","crv":"P-521","x":"AA","y":"AA"},
        ]});
        let set = KeySet::parse(serde_json::to_vec(&doc).unwrap_or_default().as_slice())
            .unwrap_or_default();
        assert_eq!(set.kids(), vec!["sig1", "noalg"]);
        assert_eq!(set.candidates(Some("sig1"), Algorithm::RS256).count(), 1);
        assert_eq!(set.candidates(Some("sig1"), Algorithm::PS256).count(), 0, "JWK alg pins RS256");
        assert_eq!(set.candidates(Some("noalg"), Algorithm::PS256).count(), 1);
        assert_eq!(set.candidates(Some("enc1"), Algorithm::RS256).count(), 0);
        assert_eq!(set.candidates(Some("sig1"), Algorithm::ES256).count(), 0, "kty must match");
        assert_eq!(set.candidates(None, Algorithm::RS256).count(), 2);
        assert!(KeySet::parse(b"{}").is_err());
    }
}
