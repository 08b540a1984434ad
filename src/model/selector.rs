//! The PromQL series selector syntax used by `match[]`: `name{a="b", c=~"d.*"}`.
//!
//! Grammar (whitespace ` \t\r\n` and `#` comments to end of line may appear between tokens):
//!
//! ```text
//! selector := metric_name [ "{" matchers "}" ] | "{" matchers "}"
//! matchers := [ matcher { "," matcher } [ "," ] ]
//! matcher  := ( label_name | string ) ( "=" | "!=" | "=~" | "!~" ) string
//!           | string                      (a metric name: `__name__="..."`)
//! string   := "..." | '...' | `...`       (Go escapes in the first two; none in backticks)
//! ```
//!
//! The quoted forms are Prometheus 3's for UTF-8 names: `{"http.server.duration"}`,
//! `{"http.server.duration", "service.name"="api"}`, `metric{"label.x"="v"}`. A quoted
//! name may be anything but empty; a bare quoted string inside the braces names the metric,
//! as in Prometheus 3 (`newMetricNameMatcher` in `promql/parser/parse.go`).

use thiserror::Error;

use super::{MatchOp, Matcher, METRIC_NAME};

/// A `match[]` that is not a valid series selector.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SelectorError {
    /// Syntax error at a byte offset.
    #[error("invalid series selector at offset {offset}: {what}")]
    Syntax {
        /// Byte offset of the problem.
        offset: usize,
        /// What was expected or wrong.
        what: String,
    },
    /// A regex that does not compile.
    #[error(transparent)]
    Matcher(#[from] super::MatcherError),
    /// Every matcher matches the empty string, so it would select every series.
    #[error("match[] must contain at least one non-empty matcher")]
    AllEmpty,
}

/// Parses a series selector such as `up`, `{job="x"}` or `http_requests_total{code=~"5.."}`.
///
/// A metric name becomes a `__name__="name"` matcher, first in the result. As in Prometheus,
/// `{__name__="x"}` is allowed but `x{__name__="y"}` (a name set twice) is not, and a
/// selector whose every matcher matches the empty string is refused with
/// [`SelectorError::AllEmpty`], because it would select every series.
pub fn parse_selector(s: &str) -> Result<Vec<Matcher>, SelectorError> {
    let mut p = Parser { s, pos: 0 };
    let matchers = p.selector()?;
    if matchers.iter().all(Matcher::matches_empty) {
        return Err(SelectorError::AllEmpty);
    }
    Ok(matchers)
}

/// Quoted text longest inside an error message, in characters.
const MAX_ERROR_QUOTE_CHARS: usize = 20;

fn syntax(offset: usize, what: impl Into<String>) -> SelectorError {
    SelectorError::Syntax {
        offset,
        what: what.into(),
    }
}

fn is_name_start(c: u8, metric: bool) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || (metric && c == b':')
}

fn is_name_char(c: u8, metric: bool) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || (metric && c == b':')
}

struct Parser<'a> {
    s: &'a str,
    /// Byte offset of the next unread byte. On a char boundary except while a quoted
    /// string's bytes are copied, where nothing slices `s`.
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    /// A short description of what is at the cursor, for error messages.
    fn found(&self) -> String {
        let rest = &self.s[self.pos..];
        if rest.is_empty() {
            return "end of input".to_owned();
        }
        let shown: String = rest.chars().take(MAX_ERROR_QUOTE_CHARS).collect();
        if shown.len() < rest.len() {
            format!("{shown:?}...")
        } else {
            format!("{shown:?}")
        }
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'#' => {
                    // A comment runs to the end of the line.
                    self.pos = self.s[self.pos..]
                        .find('\n')
                        .map_or(self.s.len(), |i| self.pos + i);
                }
                _ => break,
            }
        }
    }

    /// Reads a name if one starts at the cursor.
    fn name(&mut self, metric: bool) -> Option<&str> {
        let start = self.pos;
        match self.peek() {
            Some(c) if is_name_start(c, metric) => self.pos += 1,
            _ => return None,
        }
        while matches!(self.peek(), Some(c) if is_name_char(c, metric)) {
            self.pos += 1;
        }
        Some(&self.s[start..self.pos])
    }

    fn selector(&mut self) -> Result<Vec<Matcher>, SelectorError> {
        let mut matchers = Vec::new();
        self.skip_space();
        let metric = self.name(true).map(str::to_owned);
        if let Some(name) = &metric {
            matchers.push(Matcher::new(MatchOp::Eq, METRIC_NAME, name.as_str())?);
        }
        self.skip_space();
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                self.matchers(metric.is_some(), &mut matchers)?;
            }
            _ if metric.is_none() => {
                return Err(syntax(
                    self.pos,
                    format!("expected a metric name or '{{', found {}", self.found()),
                ));
            }
            _ => {}
        }
        self.skip_space();
        if self.pos < self.s.len() {
            return Err(syntax(
                self.pos,
                format!("unexpected {} after the selector", self.found()),
            ));
        }
        Ok(matchers)
    }

    /// Parses the matchers after `{`, through the closing `}`.
    fn matchers(&mut self, has_metric: bool, out: &mut Vec<Matcher>) -> Result<(), SelectorError> {
        loop {
            self.skip_space();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(());
            }
            let start = self.pos;
            let name = if matches!(self.peek(), Some(b'"' | b'\'' | b'`')) {
                let name = self.string()?;
                self.skip_space();
                if matches!(self.peek(), Some(b',' | b'}')) {
                    // A bare quoted string is the metric name.
                    if has_metric {
                        return Err(syntax(
                            start,
                            "metric name must not be set twice (both before '{' and in braces)",
                        ));
                    }
                    out.push(Matcher::new(MatchOp::Eq, METRIC_NAME, name)?);
                    self.end_of_matcher()?;
                    continue;
                }
                if name.is_empty() {
                    return Err(syntax(start, "label name must not be empty"));
                }
                name
            } else {
                let Some(name) = self.name(false) else {
                    return Err(syntax(
                        self.pos,
                        format!("expected a label name or '}}', found {}", self.found()),
                    ));
                };
                name.to_owned()
            };
            if has_metric && name == METRIC_NAME {
                return Err(syntax(
                    start,
                    "metric name must not be set twice (both before '{' and as __name__)",
                ));
            }
            self.skip_space();
            let op = self.op()?;
            self.skip_space();
            let value = self.string()?;
            out.push(Matcher::new(op, name, value)?);
            self.skip_space();
            self.end_of_matcher()?;
        }
    }

    /// After a matcher: consumes a `,`, or leaves a `}` for the loop to see.
    fn end_of_matcher(&mut self) -> Result<(), SelectorError> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'}') => Ok(()),
            _ => Err(syntax(
                self.pos,
                format!("expected ',' or '}}', found {}", self.found()),
            )),
        }
    }

    fn op(&mut self) -> Result<MatchOp, SelectorError> {
        let rest = &self.s.as_bytes()[self.pos..];
        let (op, len) = match rest {
            [b'=', b'~', ..] => (MatchOp::Re, 2),
            [b'!', b'=', ..] => (MatchOp::Neq, 2),
            [b'!', b'~', ..] => (MatchOp::Nre, 2),
            [b'=', ..] => (MatchOp::Eq, 1),
            _ => {
                return Err(syntax(
                    self.pos,
                    format!(
                        "expected one of '=', '!=', '=~', '!~', found {}",
                        self.found()
                    ),
                ));
            }
        };
        self.pos += len;
        Ok(op)
    }

    /// Reads a quoted string and returns its value.
    fn string(&mut self) -> Result<String, SelectorError> {
        let open_at = self.pos;
        let quote = match self.peek() {
            Some(q @ (b'"' | b'\'' | b'`')) => q,
            _ => {
                return Err(syntax(
                    self.pos,
                    format!("expected a quoted string, found {}", self.found()),
                ));
            }
        };
        self.pos += 1;
        // Bytes, not chars: `\xHH` and octal escapes produce single bytes, as in Go.
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(syntax(open_at, "unterminated quoted string"));
            };
            if c == quote {
                self.pos += 1;
                break;
            }
            if quote == b'`' {
                // Raw string: everything up to the closing backtick, newlines included.
                buf.push(c);
                self.pos += 1;
                continue;
            }
            match c {
                b'\n' => return Err(syntax(open_at, "unterminated quoted string")),
                b'\\' => self.escape(quote, &mut buf)?,
                _ => {
                    buf.push(c);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(buf)
            .map_err(|_| syntax(open_at, "string escapes do not form valid UTF-8"))
    }

    /// Decodes one escape sequence (the cursor is on the backslash), Go-style.
    fn escape(&mut self, quote: u8, buf: &mut Vec<u8>) -> Result<(), SelectorError> {
        let at = self.pos;
        self.pos += 1;
        let Some(c) = self.peek() else {
            return Err(syntax(at, "escape sequence not terminated"));
        };
        self.pos += 1;
        let simple = match c {
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'\\' => Some(b'\\'),
            // As in Go, a quote may be escaped only inside a string it delimits.
            q if q == quote => Some(q),
            _ => None,
        };
        if let Some(b) = simple {
            buf.push(b);
            return Ok(());
        }
        let (digits, radix, is_byte) = match c {
            b'0'..=b'7' => {
                self.pos -= 1; // the first digit is part of the number
                (3, 8, true)
            }
            b'x' => (2, 16, true),
            b'u' => (4, 16, false),
            b'U' => (8, 16, false),
            _ => {
                let shown: String = self.s[at + 1..].chars().take(1).collect();
                return Err(syntax(at, format!("unknown escape sequence \\{shown}")));
            }
        };
        let mut v: u32 = 0;
        for _ in 0..digits {
            let d = self.peek().and_then(|d| (d as char).to_digit(radix));
            let Some(d) = d else {
                return Err(syntax(
                    at,
                    format!("escape sequence needs {digits} base-{radix} digits"),
                ));
            };
            v = v * radix + d;
            self.pos += 1;
        }
        if is_byte {
            let Ok(b) = u8::try_from(v) else {
                return Err(syntax(at, "octal escape value > 255"));
            };
            buf.push(b);
        } else {
            let Some(ch) = char::from_u32(v) else {
                return Err(syntax(
                    at,
                    "escape sequence is an invalid Unicode code point",
                ));
            };
            let mut tmp = [0u8; 4];
            buf.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one place that calls the parser. `expected` is the matchers as
    /// `name op "value"` joined by `, `, or the error's Display text.
    fn check(input: &str, expected: &str) {
        let got = match parse_selector(input) {
            Ok(ms) => ms
                .iter()
                .map(|m| format!("{}{}{:?}", m.name, m.op.as_str(), m.value))
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expected, "input: {input:?}");
    }

    #[test]
    fn valid_selectors() {
        let table: &[(&str, &str)] = &[
            ("up", r#"__name__="up""#),
            ("  up  ", r#"__name__="up""#),
            ("ns:rate_5m", r#"__name__="ns:rate_5m""#),
            ("up{}", r#"__name__="up""#),
            (r#"up{job="x"}"#, r#"__name__="up", job="x""#),
            (r#"{job="x",}"#, r#"job="x""#),
            (
                "{ job = \"x\" ,\n\tcode =~ '5..' , }",
                r#"job="x", code=~"5..""#,
            ),
            (r#"{__name__="up"}"#, r#"__name__="up""#),
            (
                r#"{__name__=~"up|down", a!="", b!~"x"}"#,
                r#"__name__=~"up|down", a!="", b!~"x""#,
            ),
            (r#"{a="x", a="y"}"#, r#"a="x", a="y""#),
            (
                r#"x{a="q\"\\\n\t\x41\101\u00e9\U0001F600"}"#,
                "__name__=\"x\", a=\"q\\\"\\\\\\n\\tAAé😀\"",
            ),
            (r#"x{a="\xc3\xa9"}"#, r#"__name__="x", a="é""#),
            (r#"x{a='it\'s'}"#, r#"__name__="x", a="it's""#),
            (r#"x{a='say "hi"'}"#, r#"__name__="x", a="say \"hi\"""#),
            ("x{a=`raw\\n\n`}", r#"__name__="x", a="raw\\n\n""#),
            ("x # comment\n{a=\"b\"} # more", r#"__name__="x", a="b""#),
            ("{on=\"b\"}", r#"on="b""#),
            // Prometheus 3's quoted UTF-8 names.
            (
                r#"{"http.server.duration"}"#,
                r#"__name__="http.server.duration""#,
            ),
            (
                r#"{"http.server.duration", "service.name"="api"}"#,
                r#"__name__="http.server.duration", service.name="api""#,
            ),
            (r#"{__name__="a.b"}"#, r#"__name__="a.b""#),
            (
                r#"metric{"label.x"="v"}"#,
                r#"__name__="metric", label.x="v""#,
            ),
            (
                "{ 'job name' !~ `a|b` , \"東京\"=~\"x\" , }",
                r#"job name!~"a|b", 東京=~"x""#,
            ),
            (
                r#"{"a\"b\n"="v", "\u00e9"}"#,
                "a\"b\n=\"v\", __name__=\"é\"",
            ),
            (r#"{job="x", "up"}"#, r#"job="x", __name__="up""#),
            (r#"{"__name__"="x.y"}"#, r#"__name__="x.y""#),
        ];
        for (input, expected) in table {
            check(input, expected);
        }
    }

    #[test]
    fn invalid_selectors_report_offsets() {
        let table: &[(&str, &str)] = &[
            ("", "error: invalid series selector at offset 0: expected a metric name or '{', found end of input"),
            ("   ", "error: invalid series selector at offset 3: expected a metric name or '{', found end of input"),
            ("1up", "error: invalid series selector at offset 0: expected a metric name or '{', found \"1up\""),
            ("up down", "error: invalid series selector at offset 3: unexpected \"down\" after the selector"),
            ("up{", "error: invalid series selector at offset 3: expected a label name or '}', found end of input"),
            ("up{a}", "error: invalid series selector at offset 4: expected one of '=', '!=', '=~', '!~', found \"}\""),
            ("up{a=}", "error: invalid series selector at offset 5: expected a quoted string, found \"}\""),
            ("up{a=b}", "error: invalid series selector at offset 5: expected a quoted string, found \"b}\""),
            (r#"up{a="b" c="d"}"#, "error: invalid series selector at offset 9: expected ',' or '}', found \"c=\\\"d\\\"}\""),
            (r#"up{a="b",,}"#, "error: invalid series selector at offset 9: expected a label name or '}', found \",}\""),
            (r#"up{a="b"}}"#, "error: invalid series selector at offset 9: unexpected \"}\" after the selector"),
            (r#"up{a:b="c"}"#, "error: invalid series selector at offset 4: expected one of '=', '!=', '=~', '!~', found \":b=\\\"c\\\"}\""),
            (r#"up{a="b"#, "error: invalid series selector at offset 5: unterminated quoted string"),
            ("up{a=\"b\nc\"}", "error: invalid series selector at offset 5: unterminated quoted string"),
            ("up{a=`b}", "error: invalid series selector at offset 5: unterminated quoted string"),
            (r#"up{a="\q"}"#, "error: invalid series selector at offset 6: unknown escape sequence \\q"),
            (r#"up{a="\'"}"#, "error: invalid series selector at offset 6: unknown escape sequence \\'"),
            (r#"up{a='\"'}"#, "error: invalid series selector at offset 6: unknown escape sequence \\\""),
            (r#"up{a="\x4"}"#, "error: invalid series selector at offset 6: escape sequence needs 2 base-16 digits"),
            (r#"up{a="\777"}"#, "error: invalid series selector at offset 6: octal escape value > 255"),
            (r#"up{a="\uD800"}"#, "error: invalid series selector at offset 6: escape sequence is an invalid Unicode code point"),
            (r#"up{a="\U00110000"}"#, "error: invalid series selector at offset 6: escape sequence is an invalid Unicode code point"),
            (r#"up{a="\xff"}"#, "error: invalid series selector at offset 5: string escapes do not form valid UTF-8"),
            (r#"up{a="\"#, "error: invalid series selector at offset 6: escape sequence not terminated"),
            (r#"up{__name__="x"}"#, "error: invalid series selector at offset 3: metric name must not be set twice (both before '{' and as __name__)"),
            (r#"{a=~"("}"#, "error: invalid regular expression \"(\": regex parse error:\n    (\n    ^\nerror: unclosed group"),
            ("{}", "error: match[] must contain at least one non-empty matcher"),
            (r#"{a=""}"#, "error: match[] must contain at least one non-empty matcher"),
            (r#"{a=~".*", b!="x"}"#, "error: match[] must contain at least one non-empty matcher"),
            (r#"{a!~".+"}"#, "error: match[] must contain at least one non-empty matcher"),
            (r#"x{"y"}"#, "error: invalid series selector at offset 2: metric name must not be set twice (both before '{' and in braces)"),
            (r#"x{"__name__"="y"}"#, "error: invalid series selector at offset 2: metric name must not be set twice (both before '{' and as __name__)"),
            (r#"{""="x"}"#, "error: invalid series selector at offset 1: label name must not be empty"),
            (r#"{"a" "b"}"#, "error: invalid series selector at offset 5: expected one of '=', '!=', '=~', '!~', found \"\\\"b\\\"}\""),
            (r#"{"a"="#, "error: invalid series selector at offset 5: expected a quoted string, found end of input"),
            (r#"{"a}"#, "error: invalid series selector at offset 1: unterminated quoted string"),
            (r#"{""}"#, "error: match[] must contain at least one non-empty matcher"),
            ("{é=\"x\"}", "error: invalid series selector at offset 1: expected a label name or '}', found \"é=\\\"x\\\"}\""),
            (
                "{aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}",
                "error: invalid series selector at offset 41: expected one of '=', '!=', '=~', '!~', found \"}\"",
            ),
            (
                "{@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}",
                "error: invalid series selector at offset 1: expected a label name or '}', found \"@aaaaaaaaaaaaaaaaaaa\"...",
            ),
        ];
        for (input, expected) in table {
            check(input, expected);
        }
    }
}
