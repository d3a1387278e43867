//! RFC 6570 URI template matching, level 1 (`{var}`) plus reserved expansion (`{+var}`).
//!
//! Used to route `resources/read` and `resources/subscribe` for URIs that are not listed as
//! concrete resources to the backend whose resource template produced them. Matching follows
//! the MCP SDKs: `{var}` matches one or more characters other than `/`, `?` and `#`; `{+var}`
//! matches one or more characters of any kind. Other operators (`{#x}`, `{?x}`, `{/x}`, …),
//! variable lists and modifiers are not supported: such templates never match.

use std::collections::HashSet;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Text that must appear verbatim.
    Literal(String),
    /// `{var}`: one or more characters other than `/`, `?`, `#`.
    Simple,
    /// `{+var}`: one or more characters of any kind.
    Reserved,
}

/// A parsed URI template that can test whether a URI is one of its expansions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UriTemplate {
    parts: Vec<Part>,
}

impl UriTemplate {
    /// Parses `template`; `None` if it uses anything beyond `{var}` and `{+var}` or has
    /// unbalanced braces.
    pub(crate) fn parse(template: &str) -> Option<Self> {
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            let literal_end = rest.find(['{', '}']).unwrap_or(rest.len());
            let (literal, tail) = rest.split_at(literal_end);
            if !literal.is_empty() {
                parts.push(Part::Literal(literal.to_owned()));
            }
            if tail.is_empty() {
                break;
            }
            let body = tail.strip_prefix('{')?;
            let close = body.find('}')?;
            parts.push(parse_expression(body.get(..close)?)?);
            rest = body.get(close + 1..)?;
        }
        Some(Self { parts })
    }

    /// Whether `uri` is an expansion of this template.
    pub(crate) fn matches(&self, uri: &str) -> bool {
        let mut failed = HashSet::new();
        self.match_from(0, uri, 0, &mut failed)
    }

    /// Whether `uri[pos..]` matches `parts[part..]`; `failed` memoizes dead ends so that
    /// adjacent variables cannot cause exponential backtracking.
    fn match_from(
        &self,
        part: usize,
        uri: &str,
        pos: usize,
        failed: &mut HashSet<(usize, usize)>,
    ) -> bool {
        let (Some(current), Some(rest)) = (self.parts.get(part), uri.get(pos..)) else {
            return pos == uri.len() && part == self.parts.len();
        };
        if failed.contains(&(part, pos)) {
            return false;
        }
        let matched = match current {
            Part::Literal(text) => {
                rest.starts_with(text.as_str())
                    && self.match_from(part + 1, uri, pos + text.len(), failed)
            }
            Part::Simple | Part::Reserved => {
                let reserved = *current == Part::Reserved;
                rest.char_indices()
                    .take_while(|&(_, c)| reserved || !is_delimiter(c))
                    .any(|(i, c)| self.match_from(part + 1, uri, pos + i + c.len_utf8(), failed))
            }
        };
        if !matched {
            failed.insert((part, pos));
        }
        matched
    }
}

/// Parses the inside of one `{…}` expression.
fn parse_expression(expression: &str) -> Option<Part> {
    let (part, name) = match expression.strip_prefix('+') {
        Some(name) => (Part::Reserved, name),
        None => (Part::Simple, expression),
    };
    is_var_name(name).then_some(part)
}

/// Whether `name` is a valid RFC 6570 variable name (ALPHA / DIGIT / `_` / `.` / pct-encoded).
fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '%'))
}

/// Characters a simple `{var}` expansion never spans.
fn is_delimiter(c: char) -> bool {
    matches!(c, '/' | '?' | '#')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(template: &str, uri: &str) -> bool {
        UriTemplate::parse(template).is_some_and(|t| t.matches(uri))
    }

    #[test]
    fn simple_variable_matches_one_segment() {
        assert!(matches("file:///{path}", "file:///a"));
        assert!(matches("weather://{city}/today", "weather://paris/today"));
        assert!(!matches("weather://{city}/today", "weather://paris/tomorrow"));
        assert!(!matches("weather://{city}/today", "weather://paris/x/today"));
        assert!(!matches("file:///{path}", "file:///a/b"));
        assert!(!matches("file:///{path}", "file:///"));
    }

    #[test]
    fn reserved_variable_spans_slashes() {
        assert!(matches("file:///{+path}", "file:///a/b/c.txt"));
        assert!(matches("repo://{owner}/{+path}/raw", "repo://me/src/lib.rs/raw"));
        assert!(!matches("file:///{+path}", "file:///"));
    }

    #[test]
    fn literal_template_matches_only_itself() {
        assert!(matches("config://app", "config://app"));
        assert!(!matches("config://app", "config://app2"));
        assert!(!matches("config://app", "config://ap"));
    }

    #[test]
    fn adjacent_and_unicode_variables() {
        assert!(matches("x://{a}{b}", "x://ab"));
        assert!(!matches("x://{a}{b}", "x://a"));
        assert!(matches("city://{name}", "city://São Paulo"));
        assert!(matches("q://{a}-{b}", "q://x-y-z"));
    }

    #[test]
    fn unsupported_templates_do_not_parse() {
        for template in ["a://{?q}", "a://{#f}", "a://{/p}", "a://{x,y}", "a://{x*}", "a://{x:3}"] {
            assert_eq!(UriTemplate::parse(template), None, "{template}");
        }
        for template in ["a://{x", "a://x}", "a://{}", "a://{+}"] {
            assert_eq!(UriTemplate::parse(template), None, "{template}");
        }
    }

    #[test]
    fn many_adjacent_variables_stay_fast() {
        let template = format!("x://{}", "{a}".repeat(30));
        let uri = format!("x://{}/", "a".repeat(200));
        assert!(!matches(&template, &uri));
    }

    proptest! {
        #[test]
        fn expansions_match(
            literals in proptest::collection::vec("[a-z:/.-]{0,6}", 1..5),
            values in proptest::collection::vec("[a-zA-Z0-9_ %-]{1,8}", 4),
        ) {
            let mut template = String::new();
            let mut uri = String::new();
            for (literal, value) in literals.iter().zip(&values) {
                template.push_str(literal);
                template.push_str("{v}");
                uri.push_str(literal);
                uri.push_str(value);
            }
            prop_assert!(matches(&template, &uri), "{template} vs {uri}");
        }

        #[test]
        fn simple_variable_never_spans_a_slash(
            prefix in "[a-z]{1,5}://",
            before in "[a-z]{0,4}",
            after in "[a-z]{0,4}",
        ) {
            let template = format!("{prefix}{{v}}");
            let uri = format!("{prefix}{before}/{after}");
            prop_assert!(!matches(&template, &uri));
            let reserved = format!("{prefix}{{+v}}");
            prop_assert_eq!(matches(&reserved, &uri), true);
        }
    }
}
