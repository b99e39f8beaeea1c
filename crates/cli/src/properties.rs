//! A reader for Java `.properties` files, the format of Axon Server's `axonserver.properties`.
//!
//! It covers what people actually write in those files: `key=value`, `key: value` and
//! `key value`, `#` and `!` comment lines, lines continued with a trailing backslash, and the
//! escapes `\t \n \r \f \uXXXX`. Unlike `java.util.Properties` it rejects a line that holds a key
//! and nothing else: in a configuration file that is nearly always a typo, and silently reading
//! it as an empty value would hide it.

/// One `key = value` pair, with the line it starts on (1-based) for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A line that cannot be read; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Parses the text of a properties file into entries, in file order (later duplicates are kept;
/// the caller decides that the last one wins, as in Java).
pub fn parse(text: &str) -> Result<Vec<Entry>, ParseError> {
    let mut entries = Vec::new();
    let mut lines = text.split('\n').enumerate();
    while let Some((index, physical)) = lines.next() {
        let line = index + 1;
        let first = strip_cr(physical).trim_start();
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        // Join continuation lines: an odd number of trailing backslashes continues the line, and
        // the next line's leading whitespace is dropped.
        let mut logical = String::from(first);
        while ends_with_continuation(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(strip_cr(next).trim_start()),
                None => break,
            }
        }
        entries.push(parse_logical_line(&logical, line)?);
    }
    Ok(entries)
}

fn strip_cr(line: &str) -> &str {
    line.strip_suffix('\r').unwrap_or(line)
}

fn ends_with_continuation(line: &str) -> bool {
    line.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1
}

fn parse_logical_line(logical: &str, line: usize) -> Result<Entry, ParseError> {
    let malformed = |reason: &str| ParseError {
        line,
        reason: reason.to_string(),
    };
    let key_end = find_key_end(logical);
    let raw_key = &logical[..key_end];
    if raw_key.is_empty() {
        return Err(malformed("missing key before the `=` or `:`"));
    }
    let rest = logical[key_end..].trim_start_matches(is_properties_whitespace);
    let (had_separator, rest) = match rest.chars().next() {
        Some(c @ ('=' | ':')) => (true, &rest[c.len_utf8()..]),
        _ => (false, rest),
    };
    let raw_value = rest.trim_start_matches(is_properties_whitespace);
    if !had_separator && raw_value.is_empty() {
        return Err(malformed(
            "expected `key=value` or `key: value`, found a key with no value",
        ));
    }
    let key = unescape(raw_key).map_err(|reason| malformed(&reason))?;
    let value = unescape(raw_value).map_err(|reason| malformed(&reason))?;
    Ok(Entry {
        key,
        value: value.trim_end().to_string(),
        line,
    })
}

/// Whitespace as `java.util.Properties` defines it between key and value.
fn is_properties_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0c')
}

/// The byte offset where the key ends: the first unescaped `=`, `:` or whitespace.
fn find_key_end(logical: &str) -> usize {
    let mut escaped = false;
    for (offset, c) in logical.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '=' || c == ':' || is_properties_whitespace(c) {
            return offset;
        }
    }
    logical.len()
}

fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let decoded = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 4)
                    .and_then(char::from_u32);
                match decoded {
                    Some(decoded) => out.push(decoded),
                    None => return Err(format!("invalid unicode escape `\\u{hex}`")),
                }
            }
            Some(other) => out.push(other),
            // A lone trailing backslash (end of file inside a continuation) is dropped, as in Java.
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text)
            .expect("parses")
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    }

    fn pair(key: &str, value: &str) -> (String, String) {
        (key.to_string(), value.to_string())
    }

    #[test]
    fn separators_comments_and_blank_lines() {
        let text = "# comment\n! also a comment\n\n  a=1\nb: 2\nc 3\nd = spaced value  \ne=\n";
        assert_eq!(
            pairs(text),
            vec![
                pair("a", "1"),
                pair("b", "2"),
                pair("c", "3"),
                pair("d", "spaced value"),
                pair("e", ""),
            ]
        );
    }

    #[test]
    fn windows_line_endings() {
        assert_eq!(pairs("a=1\r\nb=2\r\n"), vec![pair("a", "1"), pair("b", "2")]);
    }

    #[test]
    fn continuation_lines_join_and_keep_the_first_line_number() {
        let entries = parse("x=1\nlist=a,\\\n     b,\\\n     c\ny=2\n").expect("parses");
        assert_eq!(entries[1].key, "list");
        assert_eq!(entries[1].value, "a,b,c");
        assert_eq!(entries[1].line, 2);
        assert_eq!(entries[2].line, 5);
    }

    #[test]
    fn escaped_backslash_is_not_a_continuation() {
        assert_eq!(
            pairs("path=C:\\\\data\\\\\nnext=1\n"),
            vec![pair("path", "C:\\data\\"), pair("next", "1")]
        );
    }

    #[test]
    fn escapes_in_keys_and_values() {
        assert_eq!(
            pairs("a\\=b=c\\:d\nu=\\u0041\\u00e9\n"),
            vec![pair("a=b", "c:d"), pair("u", "Aé")]
        );
    }

    #[test]
    fn value_may_contain_separators() {
        assert_eq!(pairs("url=jdbc:h2:./data=x\n"), vec![pair("url", "jdbc:h2:./data=x")]);
    }

    #[test]
    fn key_without_value_is_malformed_with_line_number() {
        let err = parse("a=1\n\njust-a-key\n").expect_err("malformed");
        assert_eq!(err.line, 3);
        assert!(err.reason.contains("no value"), "{}", err.reason);
    }

    #[test]
    fn missing_key_is_malformed() {
        let err = parse("=value\n").expect_err("malformed");
        assert_eq!(err.line, 1);
        assert!(err.reason.contains("missing key"), "{}", err.reason);
    }

    #[test]
    fn bad_unicode_escape_is_malformed() {
        let err = parse("a=1\nb=\\u00zz\n").expect_err("malformed");
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("unicode"), "{}", err.reason);
    }
}
