//! URI-template matching (H2): the gateway's linear automaton against an anchored regex
//! built from the same template (the `regex` crate, also linear). Input: template, newline,
//! URI.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmcp_gateway::aggregate::template::{MAX_URI_LEN, UriTemplate};

/// The template as a regex: literals escaped, `{v}` one or more characters other than `/`,
/// `?` and `#`, `{+v}` one or more of any character. Only called for templates that parse.
fn to_regex(template: &str) -> regex::Regex {
    let mut re = String::from("^");
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        re.push_str(&regex::escape(&rest[..open]));
        let close = open + rest[open..].find('}').expect("the template parsed");
        let expression = &rest[open + 1..close];
        re.push_str(if expression.starts_with('+') { "(?s:.+)" } else { "[^/?#]+" });
        rest = &rest[close + 1..];
    }
    re.push_str(&regex::escape(rest));
    re.push('$');
    regex::RegexBuilder::new(&re).size_limit(1 << 26).build().expect("a valid regex")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (template, uri) = text.split_once('\n').unwrap_or((text, ""));
    let Some(parsed) = UriTemplate::parse(template) else { return };
    let matched = parsed.matches(uri);
    if uri.len() > MAX_URI_LEN {
        assert!(!matched);
        return;
    }
    assert_eq!(matched, to_regex(template).is_match(uri), "{template:?} vs {uri:?}");
});
