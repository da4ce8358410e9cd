//! Kafka's JAAS configuration syntax as `sasl.jaas.config` values carry it: one login module
//! entry, `<LoginModule class> <control flag> key=value ... ;`, as Kafka's JaasConfig reads
//! it. Option values are often passwords, so neither errors nor `Debug` ever show them.

use std::collections::BTreeMap;
use std::fmt;

/// The login module that reads `username`, `password` and `user_<name>` for SASL/PLAIN.
pub const PLAIN_LOGIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";
/// The login module that reads `username` and `password` for SASL/SCRAM.
pub const SCRAM_LOGIN_MODULE: &str = "org.apache.kafka.common.security.scram.ScramLoginModule";

const CONTROL_FLAGS: [&str; 4] = ["required", "requisite", "sufficient", "optional"];

/// One JAAS login module entry.
#[derive(Clone, PartialEq, Eq)]
pub struct JaasConfig {
    /// The login module's Java class name.
    pub login_module: String,
    /// `required`, `requisite`, `sufficient` or `optional`, in lower case.
    pub control_flag: String,
    pub options: BTreeMap<String, String>,
}

impl JaasConfig {
    /// The PLAIN users of a broker's listener: the `user_<name>="<password>"` options.
    pub fn plain_users(&self) -> BTreeMap<String, String> {
        self.options
            .iter()
            .filter_map(|(key, value)| {
                let user = key.strip_prefix("user_")?;
                (!user.is_empty()).then(|| (user.to_string(), value.clone()))
            })
            .collect()
    }

    /// The `username` option: whom this side authenticates as.
    pub fn username(&self) -> Option<&str> {
        self.options.get("username").map(String::as_str)
    }

    /// The `password` option.
    pub fn password(&self) -> Option<&str> {
        self.options.get("password").map(String::as_str)
    }

    pub fn is_plain(&self) -> bool {
        self.login_module == PLAIN_LOGIN_MODULE
    }

    pub fn is_scram(&self) -> bool {
        self.login_module == SCRAM_LOGIN_MODULE
    }
}

impl fmt::Debug for JaasConfig {
    /// Option keys only: the values may be passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JaasConfig")
            .field("login_module", &self.login_module)
            .field("control_flag", &self.control_flag)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Parses a `sasl.jaas.config` value: exactly one entry, ended by `;`.
pub fn parse(text: &str) -> Result<JaasConfig, String> {
    let mut lexer = Lexer { text, pos: 0 };
    let login_module = match lexer.next().map_err(LexError::without_key)? {
        Some((_, Token::Word(word))) => word,
        Some((pos, _)) => return Err(error(format!("expected a login module at byte {pos}"))),
        None => return Err(error("login module not specified".into())),
    };
    let control_flag = match lexer.next().map_err(LexError::without_key)? {
        Some((_, Token::Word(word)))
            if CONTROL_FLAGS.iter().any(|f| f.eq_ignore_ascii_case(&word)) =>
        {
            word.to_ascii_lowercase()
        }
        // The word itself is not shown: with the flag left out, it is an option.
        Some((pos, _)) => {
            return Err(error(format!(
                "invalid control flag at byte {pos} (expected required, requisite, \
                 sufficient or optional)"
            )))
        }
        None => return Err(error("control flag not specified".into())),
    };
    let mut options = BTreeMap::new();
    loop {
        let key = match lexer.next().map_err(LexError::without_key)? {
            Some((_, Token::Semicolon)) => break,
            Some((_, Token::Word(key))) => key,
            Some((pos, _)) => return Err(error(format!("expected an option key at byte {pos}"))),
            None => return Err(error("entry not terminated by ';'".into())),
        };
        // Not named until '=' follows: a stray word may be half of an unquoted password.
        match lexer.next().map_err(LexError::without_key)? {
            Some((_, Token::Equals)) => {}
            Some((pos, _)) => return Err(error(format!("expected '=' at byte {pos}"))),
            None => return Err(error("entry not terminated by ';'".into())),
        }
        let value = match lexer.next().map_err(|e| e.with_key(&key))? {
            Some((_, Token::Word(value) | Token::Quoted(value))) => value,
            _ => return Err(error(format!("value not specified for key '{key}'"))),
        };
        if options.insert(key.clone(), value).is_some() {
            return Err(error(format!("duplicate option key '{key}'")));
        }
    }
    match lexer.next().map_err(LexError::without_key)? {
        None => Ok(JaasConfig {
            login_module,
            control_flag,
            options,
        }),
        Some((pos, _)) => Err(error(format!(
            "multiple entries are not supported (more text at byte {pos})"
        ))),
    }
}

fn error(what: String) -> String {
    format!("Invalid JAAS config: {what}")
}

enum Token {
    /// A bare run of characters other than whitespace, `=`, `;` and `"`.
    Word(String),
    /// A double-quoted string, unescaped.
    Quoted(String),
    Equals,
    Semicolon,
}

/// A tokenizer error: where, and what, without the text.
struct LexError {
    pos: usize,
    what: &'static str,
}

impl LexError {
    fn without_key(self) -> String {
        error(format!("{} at byte {}", self.what, self.pos))
    }

    fn with_key(self, key: &str) -> String {
        error(format!("{} in the value of key '{key}'", self.what))
    }
}

struct Lexer<'a> {
    text: &'a str,
    /// Byte offset of the next character to read.
    pos: usize,
}

impl Lexer<'_> {
    /// The next token and its byte offset, or `None` at the end.
    fn next(&mut self) -> Result<Option<(usize, Token)>, LexError> {
        let rest = &self.text[self.pos..];
        let trimmed = rest.trim_start();
        let start = self.pos + (rest.len() - trimmed.len());
        let Some(first) = trimmed.chars().next() else {
            self.pos = self.text.len();
            return Ok(None);
        };
        let token = match first {
            '=' => {
                self.pos = start + 1;
                Token::Equals
            }
            ';' => {
                self.pos = start + 1;
                Token::Semicolon
            }
            '"' => Token::Quoted(self.quoted(start)?),
            _ => {
                let len = trimmed
                    .find(|c: char| c.is_whitespace() || matches!(c, '=' | ';' | '"'))
                    .unwrap_or(trimmed.len());
                self.pos = start + len;
                Token::Word(trimmed[..len].to_string())
            }
        };
        debug_assert!(self.pos > start && self.pos <= self.text.len());
        Ok(Some((start, token)))
    }

    /// The string that opens with the `"` at `start`, with `\"` and `\\` unescaped.
    fn quoted(&mut self, start: usize) -> Result<String, LexError> {
        let mut value = String::new();
        let mut chars = self.text[start + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos = start + 1 + i + 1;
                    return Ok(value);
                }
                '\\' => match chars.next() {
                    Some((_, escaped @ ('"' | '\\'))) => value.push(escaped),
                    _ => {
                        return Err(LexError {
                            pos: start + 1 + i,
                            what: "unsupported escape (only \\\" and \\\\)",
                        })
                    }
                },
                _ => value.push(c),
            }
        }
        Err(LexError {
            pos: start,
            what: "unterminated quoted string",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = "org.apache.kafka.common.security.plain.PlainLoginModule required \
        username=\"admin\" password=\"admin-secret\" user_admin=\"admin-secret\" \
        user_alice=\"alice-secret\";";
    const SCRAM: &str = "org.apache.kafka.common.security.scram.ScramLoginModule required \
        username=\"alice\" password=\"alice-secret\";";

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse_err(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("parsed {text:?} as {config:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn plain_example() -> Result<(), String> {
        let config = parse(PLAIN)?;
        assert_eq!(config.login_module, PLAIN_LOGIN_MODULE);
        assert_eq!(config.control_flag, "required");
        assert!(config.is_plain() && !config.is_scram());
        assert_eq!(config.username(), Some("admin"));
        assert_eq!(config.password(), Some("admin-secret"));
        assert_eq!(
            config.plain_users(),
            options(&[("admin", "admin-secret"), ("alice", "alice-secret")])
        );
        Ok(())
    }

    #[test]
    fn scram_example() -> Result<(), String> {
        let config = parse(SCRAM)?;
        assert!(config.is_scram() && !config.is_plain());
        assert_eq!(config.username(), Some("alice"));
        assert_eq!(config.password(), Some("alice-secret"));
        assert!(config.plain_users().is_empty());
        Ok(())
    }

    #[test]
    fn whitespace_quoting_and_escapes() -> Result<(), String> {
        let text = "\n  com.example.Module\tOPTIONAL\n  a = bare\n b=\"with space; and = \" \
                    c=\"q\\\"uote\\\\d\"d=\"\"\ne=\"multi\nline\"user_=x;\n ";
        let config = parse(text)?;
        assert_eq!(config.control_flag, "optional");
        assert_eq!(
            config.options,
            options(&[
                ("a", "bare"),
                ("b", "with space; and = "),
                ("c", "q\"uote\\d"),
                ("d", ""),
                ("e", "multi\nline"),
                ("user_", "x"),
            ])
        );
        assert!(config.plain_users().is_empty(), "user_ names no user");
        assert_eq!(parse("M sufficient;")?.options, BTreeMap::new());
        assert_eq!(parse("M requisite k=v;")?.control_flag, "requisite");
        Ok(())
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse_err(""),
            "Invalid JAAS config: login module not specified"
        );
        assert_eq!(
            parse_err("  \n"),
            "Invalid JAAS config: login module not specified"
        );
        assert_eq!(
            parse_err("M"),
            "Invalid JAAS config: control flag not specified"
        );
        assert!(parse_err("M mandatory;").contains("invalid control flag at byte 2"));
        assert!(parse_err("M required a=b").contains("not terminated by ';'"));
        assert!(parse_err("M required a=b; M required c=d;").contains("multiple entries"));
        assert!(parse_err("M required;;").contains("multiple entries"));
        assert!(parse_err("M required a=\"b;")
            .contains("unterminated quoted string in the value of key 'a'"));
        assert!(parse_err("M required a=\"b\\n\";").contains("unsupported escape"));
        assert!(parse_err("M required a=;").contains("value not specified for key 'a'"));
        assert!(parse_err("M required a;").contains("expected '=' at byte 12"));
        assert!(parse_err("M required a=b a=c;").contains("duplicate option key 'a'"));
        assert!(parse_err("M required =b;").contains("expected an option key"));
        assert!(parse_err("\"M\" required;").contains("expected a login module"));
        assert!(parse_err("M required a=b; \"x").contains("unterminated quoted string at byte 16"));
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() -> Result<(), String> {
        for text in [PLAIN, SCRAM] {
            let debug = format!("{:?}", parse(text)?);
            assert!(!debug.contains("secret"), "{debug}");
            assert!(debug.contains("password"), "{debug}");
        }
        for text in [
            // An unquoted password with a space: half of it looks like a key.
            "M required username=alice password=alice secret;",
            "M required password=\"alice-secret",
            "M required password=\"alice-secret\\x\";",
            "M required password=\"alice-secret\"",
            "M required password=\"alice-secret\"; M required password=\"secret\";",
            "M required password=\"alice-secret\" password=\"secret\";",
            "M secret password=x;",
            "M required password=alice-secret password2 secret;",
        ] {
            let e = parse_err(text);
            assert!(!e.contains("secret"), "{text}: {e}");
        }
        Ok(())
    }
}
