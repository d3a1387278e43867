//! RFC 6570 URI template matching, level 1 (`{var}`) plus reserved expansion (`{+var}`).
//!
//! Used to route `resources/read` and `resources/subscribe` for URIs that are not listed as
//! concrete resources to the backend whose resource template produced them. Matching follows
//! the MCP SDKs: `{var}` matches one or more characters other than `/`, `?` and `#`; `{+var}`
//! matches one or more characters of any kind. Other operators (`{#x}`, `{?x}`, `{/x}`, …),
//! variable lists and modifiers are not supported: such templates never match.
//!
//! Matching runs on the request path with a client-chosen URI, so it is linear: the template
//! is a small automaton whose set of live states is advanced once per URI character
//! (O(template length × URI length), no backtracking, no allocation beyond two state sets),
//! and URIs longer than [`MAX_URI_LEN`] never match.

/// Longest URI matched against templates (longer ones are never routed by a template).
pub const MAX_URI_LEN: usize = 8 * 1024;

/// One token of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A character that must appear verbatim.
    Char(char),
    /// A variable: `{var}` (`reserved == false`) or `{+var}`; one or more characters.
    Var {
        /// `{+var}`: may span `/`, `?` and `#`.
        reserved: bool,
    },
}

/// A parsed URI template that can test whether a URI is one of its expansions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriTemplate {
    tokens: Vec<Token>,
}

impl UriTemplate {
    /// Parses `template`; `None` if it uses anything beyond `{var}` and `{+var}` or has
    /// unbalanced braces.
    pub fn parse(template: &str) -> Option<Self> {
        let mut tokens = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            let literal_end = rest.find(['{', '}']).unwrap_or(rest.len());
            let (literal, tail) = rest.split_at(literal_end);
            tokens.extend(literal.chars().map(Token::Char));
            if tail.is_empty() {
                break;
            }
            let body = tail.strip_prefix('{')?;
            let close = body.find('}')?;
            tokens.push(parse_expression(body.get(..close)?)?);
            rest = body.get(close + 1..)?;
        }
        Some(Self { tokens })
    }

    /// Whether `uri` is an expansion of this template (always `false` above [`MAX_URI_LEN`]).
    pub fn matches(&self, uri: &str) -> bool {
        uri.len() <= MAX_URI_LEN && self.matches_linear(uri)
    }

    /// The automaton: `at[i]` means "`tokens[..i]` matched the URI so far"; `in_var[i]` means
    /// "inside variable `tokens[i]`, at least one character consumed" (which also means
    /// `tokens[..=i]` matched, so it sets `at[i + 1]`).
    fn matches_linear(&self, uri: &str) -> bool {
        let n = self.tokens.len();
        let mut at = vec![false; n + 1];
        let mut in_var = vec![false; n];
        let mut next_at = vec![false; n + 1];
        let mut next_in_var = vec![false; n];
        at[0] = true;
        for c in uri.chars() {
            next_at.fill(false);
            next_in_var.fill(false);
            let mut alive = false;
            for (i, token) in self.tokens.iter().enumerate() {
                match *token {
                    Token::Char(x) => {
                        if at[i] && x == c {
                            next_at[i + 1] = true;
                            alive = true;
                        }
                    }
                    Token::Var { reserved } => {
                        if (at[i] || in_var[i]) && (reserved || !is_delimiter(c)) {
                            next_in_var[i] = true;
                            next_at[i + 1] = true;
                            alive = true;
                        }
                    }
                }
            }
            if !alive {
                return false;
            }
            std::mem::swap(&mut at, &mut next_at);
            std::mem::swap(&mut in_var, &mut next_in_var);
        }
        at[n]
    }
}

/// Parses the inside of one `{…}` expression.
fn parse_expression(expression: &str) -> Option<Token> {
    let (reserved, name) = match expression.strip_prefix('+') {
        Some(name) => (true, name),
        None => (false, expression),
    };
    is_var_name(name).then_some(Token::Var { reserved })
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

    /// H2: `db://{table}.{column}` against `db://a.a.a.….a/` (no match) took 15 s at 64 KiB
    /// with the backtracking matcher (quadratic). Linear matching answers in microseconds;
    /// the bound only catches the pathology.
    #[test]
    fn two_variables_in_one_segment_stay_linear_on_a_64_kib_uri() {
        let t = UriTemplate::parse("db://{table}.{column}").unwrap();
        let uri = format!("db://{}/", "a.".repeat(32 * 1024));
        let start = std::time::Instant::now();
        assert!(!t.matches_linear(&uri));
        assert!(!t.matches(&uri));
        let matching = format!("db://{}", "a.".repeat(32 * 1024));
        assert!(t.matches_linear(&matching), "no length cap inside the automaton");
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_secs(1), "took {took:?}");
    }

    #[test]
    fn uris_above_the_cap_never_match() {
        let t = UriTemplate::parse("file:///{+path}").unwrap();
        let at_cap = format!("file:///{}", "a".repeat(MAX_URI_LEN - "file:///".len()));
        assert!(t.matches(&at_cap));
        assert!(!t.matches(&format!("{at_cap}a")));
    }

    /// The backtracking matcher this module used before (exponential without memo, correct):
    /// the oracle the automaton is checked against.
    fn reference(tokens: &[Token], uri: &str) -> bool {
        match tokens.split_first() {
            None => uri.is_empty(),
            Some((Token::Char(x), rest)) => {
                uri.strip_prefix(*x).is_some_and(|tail| reference(rest, tail))
            }
            Some((Token::Var { reserved }, rest)) => uri
                .char_indices()
                .take_while(|&(_, c)| *reserved || !is_delimiter(c))
                .any(|(i, c)| reference(rest, &uri[i + c.len_utf8()..])),
        }
    }

    proptest! {
        #[test]
        fn automaton_agrees_with_backtracking(
            template in "([a-c./]|\\{v\\}|\\{\\+v\\}){0,8}",
            uri in "[a-c./?]{0,12}",
        ) {
            let t = UriTemplate::parse(&template).unwrap();
            prop_assert_eq!(t.matches(&uri), reference(&t.tokens, &uri), "{} vs {}", template, uri);
        }

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
