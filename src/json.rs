//! A tiny JSON writer for `--json` output: build a value, print it on one line. Strings are escaped per RFC 8259, so
//! any file name or comment a torrent carries comes out as valid JSON.

use std::fmt;
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Str(String),
    Array(Vec<Json>),
    /// Keys in the order given.
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }
    /// A string, or `null` when absent.
    pub fn opt_str(s: Option<&str>) -> Json {
        s.map_or(Json::Null, Json::str)
    }
    pub fn object<K: Into<String>>(fields: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Object(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

/// Writes `s` as a quoted JSON string.
pub fn write_str(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            '\u{8}' => f.write_str("\\b")?,
            '\u{c}' => f.write_str("\\f")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Int(n) => write!(f, "{n}"),
            Json::UInt(n) => write!(f, "{n}"),
            Json::Str(s) => write_str(f, s),
            Json::Array(items) => {
                f.write_char('[')?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_char(']')
            }
            Json::Object(fields) => {
                f.write_char('{')?;
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write_str(f, k)?;
                    write!(f, ":{v}")?;
                }
                f.write_char('}')
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_strings() {
        let s = Json::str("a\"b\\c\nd\te\u{1}f\u{7f}é😀\u{8}\u{c}\r").to_string();
        assert_eq!(s, r#""a\"b\\c\nd\te\u0001f"#.to_string() + "\u{7f}é😀" + r#"\b\f\r""#);
    }

    #[test]
    fn writes_nested_values() {
        let v = Json::object([
            ("n", Json::Null),
            ("b", Json::Bool(true)),
            ("i", Json::Int(-3)),
            ("u", Json::UInt(u64::MAX)),
            ("a", Json::Array(vec![Json::str("x"), Json::Array(vec![])])),
            ("o", Json::object(Vec::<(String, Json)>::new())),
            ("s", Json::opt_str(None)),
        ]);
        assert_eq!(
            v.to_string(),
            r#"{"n":null,"b":true,"i":-3,"u":18446744073709551615,"a":["x",[]],"o":{},"s":null}"#
        );
    }

    #[test]
    fn output_parses_as_json_in_python() {
        // Cross-check the escaping with a real JSON parser when one is installed.
        let v = Json::object([("k\u{0}\"", Json::str("\u{1f}\\\u{2028}/"))]).to_string();
        let Ok(out) = std::process::Command::new("python3")
            .args(["-c", "import json,sys; d=json.loads(sys.argv[1]); print(repr(d))", &v])
            .output()
        else {
            return;
        };
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"{'k\x00"': '\x1f\\\u2028/'}"#);
    }
}
