//! Reading the bearer token of a request (RFC 6750 §2.1): from the `Authorization` header only.

use http::{HeaderMap, Uri};

use super::IncomingAuthError;

/// The bearer token of a request: `Ok(None)` when there is no `Authorization` header,
/// [`IncomingAuthError::UnsupportedScheme`] for another scheme, and
/// [`IncomingAuthError::MalformedHeader`] for a malformed `Bearer` credential (empty, several
/// headers, characters outside `token68`). The scheme is matched case-insensitively.
pub fn bearer_from_headers(headers: &HeaderMap) -> Result<Option<String>, IncomingAuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(IncomingAuthError::MalformedHeader("more than one Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| IncomingAuthError::MalformedHeader("the Authorization header is not ASCII"))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(IncomingAuthError::UnsupportedScheme);
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() {
        return Err(IncomingAuthError::MalformedHeader("the Bearer credential is empty"));
    }
    if !is_token68(token) {
        return Err(IncomingAuthError::MalformedHeader(
            "the Bearer credential is not a token68 value",
        ));
    }
    Ok(Some(token.to_owned()))
}

/// `token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_token68(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// Refuses a request whose query string carries an `access_token` parameter (RFC 6750 §2.3 is
/// not supported: tokens in URLs end up in logs).
pub fn reject_token_in_query(uri: &Uri) -> Result<(), IncomingAuthError> {
    let Some(q) = uri.query() else { return Ok(()) };
    if url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "access_token") {
        return Err(IncomingAuthError::TokenInQuery);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("x")),
            );
        }
        h
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_from_headers(&headers(&[])), Ok(None));
        assert_eq!(
            bearer_from_headers(&headers(&["Bearer abc.def-_~+/=="])),
            Ok(Some("abc.def-_~+/==".into()))
        );
        assert_eq!(bearer_from_headers(&headers(&["bearer abc"])), Ok(Some("abc".into())));
        assert_eq!(bearer_from_headers(&headers(&["BEARER   abc"])), Ok(Some("abc".into())));
        assert_eq!(
            bearer_from_headers(&headers(&["Basic dXNlcjpwdw=="])),
            Err(IncomingAuthError::UnsupportedScheme)
        );
        assert!(matches!(
            bearer_from_headers(&headers(&["Bearer"])),
            Err(IncomingAuthError::MalformedHeader(_))
        ));
        assert!(matches!(
            bearer_from_headers(&headers(&["Bearer   "])),
            Err(IncomingAuthError::MalformedHeader(_))
        ));
        assert!(matches!(
            bearer_from_headers(&headers(&["Bearer a b"])),
            Err(IncomingAuthError::MalformedHeader(_))
        ));
        assert!(matches!(
            bearer_from_headers(&headers(&["Bearer a,b"])),
            Err(IncomingAuthError::MalformedHeader(_))
        ));
        assert!(matches!(
            bearer_from_headers(&headers(&["Bearer ==="])),
            Err(IncomingAuthError::MalformedHeader(_))
        ));
        assert!(matches!(
            bearer_from_headers(&headers(&["Bearer a", "Bearer b"])),
            Err(IncomingAuthError::MalformedHeader(_))
        ));
    }

    #[test]
    fn query_tokens_are_refused() {
        let ok: Uri = "/mcp?x=1&access_tokens=2".parse().unwrap_or_default();
        assert_eq!(reject_token_in_query(&ok), Ok(()));
        assert_eq!(reject_token_in_query(&"/mcp".parse().unwrap_or_default()), Ok(()));
        let bad: Uri = "/mcp?x=1&access_token=abc".parse().unwrap_or_default();
        assert_eq!(reject_token_in_query(&bad), Err(IncomingAuthError::TokenInQuery));
        let encoded: Uri = "/mcp?access%5Ftoken=abc".parse().unwrap_or_default();
        assert_eq!(reject_token_in_query(&encoded), Err(IncomingAuthError::TokenInQuery));
    }
}
