//! Kafka's config providers for the `[kafka]` settings: KIP-297's `${provider:[path:]key}`
//! variables, resolved in broker settings as KIP-421 has Kafka do it, by the three providers
//! Kafka ships (`FileConfigProvider`, `DirectoryConfigProvider`, and KIP-887's
//! `EnvVarConfigProvider`), with KIP-993's `allowed.paths` and the env provider's
//! `allowlist.pattern`.
//!
//! This module owns the resolution (once, at startup, before any setting is parsed), the
//! providers, the Java properties parser the file provider needs, and the rule for which
//! settings hold secrets (`is_sensitive`). A resolved value is never put into a warning or an
//! error: they name settings, paths and variables, never what a variable stood for.
//!
//! As in Kafka's `ConfigTransformer`, a variable stays as written when its provider is not
//! configured or has no such key, path or file; it is resolved once (a value a provider gives
//! is not searched for variables again); and a provider that cannot read what it was pointed
//! at (an unreadable properties file or directory) fails startup.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Result};

/// The setting that names the providers, and the prefix of every setting of a provider.
pub const CONFIG_PROVIDERS: &str = "config.providers";
pub const FILE_PROVIDER: &str = "org.apache.kafka.common.config.provider.FileConfigProvider";
pub const DIRECTORY_PROVIDER: &str =
    "org.apache.kafka.common.config.provider.DirectoryConfigProvider";
pub const ENV_VAR_PROVIDER: &str = "org.apache.kafka.common.config.provider.EnvVarConfigProvider";

/// `allowed.paths` (file and directory providers) and `allowlist.pattern` (env provider).
const ALLOWED_PATHS: &str = "allowed.paths";
const ALLOWLIST_PATTERN: &str = "allowlist.pattern";

/// Whether `key` is `config.providers` or one of its `config.providers.*` settings (reserved
/// by Kafka's `AbstractConfig`, not broker settings).
pub fn is_provider_key(key: &str) -> bool {
    key == CONFIG_PROVIDERS
        || key
            .strip_prefix(CONFIG_PROVIDERS)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Whether a setting's value is a secret that must not be shown: names with `password`,
/// `jaas` or `secret`, and Kafka's other PASSWORD-typed settings (PEM keys and certificates
/// given inline), also with a `listener.name.<listener>.` prefix.
pub fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "jaas", "secret"]
        .iter()
        .any(|word| key.contains(word))
        || [
            "ssl.keystore.key",
            "ssl.keystore.certificate.chain",
            "ssl.truststore.certificates",
        ]
        .iter()
        .any(|name| key.ends_with(name))
}

/// Kafka settings as given, once their variables are resolved: a map whose `Debug` shows
/// `[hidden]` for the value of every `is_sensitive` setting.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RawSettings(pub BTreeMap<String, String>);

impl std::ops::Deref for RawSettings {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl fmt::Debug for RawSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let v = if is_sensitive(k) {
                    "[hidden]"
                } else {
                    v.as_str()
                };
                (k, v)
            }))
            .finish()
    }
}

/// What resolution did that the operator should know: warnings, and the variables left as
/// written. Neither holds a resolved value.
#[derive(Default)]
pub struct Resolution {
    /// For the operator (Kafka logs the provider ones at WARN).
    pub warnings: Vec<String>,
    /// (setting, the variable as written, or a description when the setting is sensitive and
    /// the text may be part of a literal secret).
    pub unresolved: Vec<(String, String)>,
    /// Values substituted into sensitive settings: scrubbed from any later startup error.
    secrets: Vec<String>,
}

impl fmt::Debug for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolution")
            .field("warnings", &self.warnings)
            .field("unresolved", &self.unresolved)
            .field("secrets", &format_args!("[{} hidden]", self.secrets.len()))
            .finish()
    }
}

impl Resolution {
    /// A startup error after resolution, with any resolved secret hidden and a note on the
    /// variables that were left as written (often the reason a setting did not parse).
    pub fn annotate(&self, e: anyhow::Error) -> anyhow::Error {
        let text = format!("{e:#}");
        let mut text = self.scrub(&text);
        if !self.unresolved.is_empty() {
            let list = self
                .unresolved
                .iter()
                .map(|(setting, var)| format!("{setting} ({var})"))
                .collect::<Vec<_>>()
                .join(", ");
            text.push_str(&format!(
                "\n(settings that still hold unresolved config variables: {list})"
            ));
        }
        anyhow!(text)
    }

    /// `text` with every value substituted into a sensitive setting replaced by `[hidden]`.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        // Longest first, so that a secret containing another is hidden whole.
        let mut secrets: Vec<&String> = self.secrets.iter().filter(|s| s.len() >= 3).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for s in secrets {
            out = out.replace(s.as_str(), "[hidden]");
        }
        out
    }
}

/// Resolves the variables in every value of `raw` in place, with the providers `raw`
/// configures and this process's environment.
pub fn resolve(raw: &mut BTreeMap<String, String>) -> Result<Resolution> {
    let env: HashMap<String, String> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    resolve_with_env(raw, &env)
}

/// `resolve`, with `env` as the environment (Kafka's provider takes one snapshot of it).
fn resolve_with_env(
    raw: &mut BTreeMap<String, String>,
    env: &HashMap<String, String>,
) -> Result<Resolution> {
    let mut resolution = Resolution::default();
    let providers = configure(raw, &mut resolution.warnings)?;
    // The keys wanted of each (provider, path), asked once each, as ConfigTransformer does.
    let mut wanted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for value in raw.values() {
        for v in variables(value) {
            if providers.contains_key(v.provider) {
                wanted
                    .entry((v.provider.to_string(), v.path.to_string()))
                    .or_default()
                    .insert(v.key.to_string());
            }
        }
    }
    let mut found: HashMap<(String, String), HashMap<String, String>> = HashMap::new();
    for ((name, path), keys) in wanted {
        let data = providers[&name]
            .get(&path, &keys, env, &mut resolution.warnings)
            .map_err(|e| anyhow!("[kafka] config provider {name:?}: {e}"))?;
        found.insert((name, path), data);
    }
    for (setting, value) in raw.iter_mut() {
        let vars = variables(value);
        if vars.is_empty() {
            continue;
        }
        let sensitive = is_sensitive(setting);
        let mut out = String::with_capacity(value.len());
        let mut at = 0;
        for v in &vars {
            out.push_str(&value[at..v.start]);
            at = v.end;
            let text = &value[v.start..v.end];
            let data = found.get(&(v.provider.to_string(), v.path.to_string()));
            match data.and_then(|d| d.get(v.key)) {
                Some(replacement) => {
                    out.push_str(replacement);
                    if sensitive {
                        resolution.secrets.push(replacement.clone());
                    }
                }
                None if providers.contains_key(v.provider) => {
                    out.push_str(text);
                    resolution.warnings.push(format!(
                        "[kafka] {setting}: {text} was not resolved (no such key, file or \
                         allowed path); it is left as written, as Kafka leaves it"
                    ));
                    resolution
                        .unresolved
                        .push((setting.clone(), text.to_string()));
                }
                None => {
                    out.push_str(text);
                    // In a secret this text may be part of a literal password: not shown.
                    let shown = if sensitive {
                        "a ${provider:[path:]key} variable".to_string()
                    } else {
                        text.to_string()
                    };
                    resolution.warnings.push(format!(
                        "[kafka] {setting} holds {shown} whose provider config.providers does \
                         not configure; it is left as written, as Kafka leaves it"
                    ));
                    resolution.unresolved.push((setting.clone(), shown));
                }
            }
        }
        out.push_str(&value[at..]);
        *value = out;
    }
    Ok(resolution)
}

/// One variable in a value: `value[start..end]` is `${provider:path:key}` or
/// `${provider:key}` (empty path).
#[derive(Debug, PartialEq, Eq)]
struct Variable<'a> {
    start: usize,
    end: usize,
    provider: &'a str,
    path: &'a str,
    key: &'a str,
}

/// The variables in `value`, left to right, as Kafka's pattern
/// `\$\{([^}]*?):(([^}]*?):)?([^}]*?)\}` finds them: a variable ends at the first `}`; the
/// provider runs to the first `:`, the path (when there is a second `:`) to the next, and
/// the key is the rest, colons included.
fn variables(value: &str) -> Vec<Variable<'_>> {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'$' && bytes[i + 1] == b'{' {
            let Some(close) = value[i + 2..].find('}') else {
                break; // no `}` after here: nothing more can match
            };
            let inner = &value[i + 2..i + 2 + close];
            if let Some((provider, rest)) = inner.split_once(':') {
                let (path, key) = rest.split_once(':').unwrap_or(("", rest));
                let end = i + 2 + close + 1;
                out.push(Variable {
                    start: i,
                    end,
                    provider,
                    path,
                    key,
                });
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// A configured provider.
enum Provider {
    File(AllowedPaths),
    Directory(AllowedPaths),
    EnvVar(Option<regex::Regex>),
}

/// The providers that `config.providers` lists and whose `config.providers.<name>.class` is
/// set, configured with their `config.providers.<name>.param.*` settings.
fn configure(
    raw: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, Provider>> {
    let mut providers = BTreeMap::new();
    let Some(names) = raw.get(CONFIG_PROVIDERS) else {
        return Ok(providers);
    };
    // Kafka splits on commas without trimming; Gregor trims, so "file, dir" names "dir".
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let class_key = format!("{CONFIG_PROVIDERS}.{name}.class");
        let Some(class) = raw.get(&class_key) else {
            // Kafka skips such a provider silently.
            warnings.push(format!(
                "[kafka] {CONFIG_PROVIDERS} lists {name:?} but {class_key} is not set; its \
                 variables are left as written"
            ));
            continue;
        };
        let prefix = format!("{CONFIG_PROVIDERS}.{name}.param.");
        let params: BTreeMap<&str, &str> = raw
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?, v.as_str())))
            .filter(|(k, _)| !k.is_empty())
            .collect();
        let (provider, known) = match class.trim() {
            FILE_PROVIDER => (
                Provider::File(
                    AllowedPaths::parse(params.get(ALLOWED_PATHS).copied())
                        .map_err(|e| anyhow!("[kafka] {prefix}{ALLOWED_PATHS}: {e}"))?,
                ),
                ALLOWED_PATHS,
            ),
            DIRECTORY_PROVIDER => (
                Provider::Directory(
                    AllowedPaths::parse(params.get(ALLOWED_PATHS).copied())
                        .map_err(|e| anyhow!("[kafka] {prefix}{ALLOWED_PATHS}: {e}"))?,
                ),
                ALLOWED_PATHS,
            ),
            ENV_VAR_PROVIDER => {
                let allowlist = match params.get(ALLOWLIST_PATTERN) {
                    // Java's Matcher.matches(): the whole name must match.
                    Some(p) => Some(regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                        anyhow!("[kafka] {prefix}{ALLOWLIST_PATTERN}: not a valid pattern: {e}")
                    })?),
                    None => None,
                };
                (Provider::EnvVar(allowlist), ALLOWLIST_PATTERN)
            }
            other => bail!(
                "[kafka] {class_key}: {other:?} is not a config provider Gregor has; use \
                 {FILE_PROVIDER}, {DIRECTORY_PROVIDER} or {ENV_VAR_PROVIDER}"
            ),
        };
        for param in params.keys().filter(|p| **p != known) {
            warnings.push(format!(
                "[kafka] {prefix}{param}: not a parameter of {}; ignored",
                class.trim()
            ));
        }
        providers.insert(name.to_string(), provider);
    }
    Ok(providers)
}

impl Provider {
    /// The values of `keys` at `path` (Kafka's `ConfigProvider.get(path, keys)`): keys it
    /// does not have are absent. Errors name paths, never values.
    fn get(
        &self,
        path: &str,
        keys: &BTreeSet<String>,
        env: &HashMap<String, String>,
        warnings: &mut Vec<String>,
    ) -> Result<HashMap<String, String>> {
        let mut data = HashMap::new();
        match self {
            Provider::File(allowed) => {
                if path.is_empty() {
                    return Ok(data);
                }
                let Some(file) = allowed.check(path, warnings) else {
                    return Ok(data);
                };
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| anyhow!("could not read properties from file {path}: {e}"))?;
                let mut properties = parse_properties(&text)
                    .map_err(|e| anyhow!("could not read properties from file {path}: {e}"))?;
                for key in keys {
                    if let Some(v) = properties.remove(key) {
                        data.insert(key.clone(), v);
                    }
                }
            }
            Provider::Directory(allowed) => {
                if path.is_empty() {
                    return Ok(data);
                }
                let Some(dir) = allowed.check(path, warnings) else {
                    return Ok(data);
                };
                if !dir.is_dir() {
                    warnings.push(format!(
                        "[kafka] config provider path {path} is not a directory"
                    ));
                    return Ok(data);
                }
                // As Kafka: the entries of the directory itself that are regular files once
                // symlinks are followed (a Kubernetes Secret volume's `..data` is not one).
                let entries = std::fs::read_dir(&dir)
                    .map_err(|e| anyhow!("could not list directory {}: {e}", dir.display()))?;
                for entry in entries {
                    let entry = entry
                        .map_err(|e| anyhow!("could not list directory {}: {e}", dir.display()))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let file = entry.path();
                    if !keys.contains(&name) || !file.is_file() {
                        continue;
                    }
                    let bytes = std::fs::read(&file).map_err(|e| {
                        anyhow!(
                            "could not read file {} for property {name}: {e}",
                            file.display()
                        )
                    })?;
                    // The whole content, trailing newline included, as Kafka reads it.
                    data.insert(name, String::from_utf8_lossy(&bytes).into_owned());
                }
            }
            Provider::EnvVar(allowlist) => {
                if !path.is_empty() {
                    bail!("path is not supported for {ENV_VAR_PROVIDER}, invalid value {path:?}");
                }
                for key in keys {
                    if allowlist.as_ref().is_some_and(|p| !p.is_match(key)) {
                        continue;
                    }
                    if let Some(v) = env.get(key) {
                        data.insert(key.clone(), v.clone());
                    }
                }
            }
        }
        Ok(data)
    }
}

/// KIP-993's `allowed.paths`: when set, the file and directory providers read only under
/// these absolute paths (compared after `.` and `..` are resolved, as Java's
/// `Path.normalize` does; symlinks are not followed).
struct AllowedPaths(Option<Vec<PathBuf>>);

impl AllowedPaths {
    /// Kafka refuses a path that is not absolute or does not exist. Gregor trims spaces
    /// around each comma-separated path (Kafka would refuse " /a" as not absolute).
    fn parse(value: Option<&str>) -> Result<Self> {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Ok(Self(None));
        };
        let mut paths = Vec::new();
        for p in value.split(',') {
            let path = normalize(Path::new(p.trim()));
            if !path.is_absolute() {
                bail!("path {:?} is not absolute", path.display().to_string());
            }
            if !path.exists() {
                bail!("path {} does not exist", path.display());
            }
            paths.push(path);
        }
        Ok(Self(Some(paths)))
    }

    /// The path to read, or None (with a warning, as Kafka logs one) when it is outside the
    /// allowed paths.
    fn check(&self, path: &str, warnings: &mut Vec<String>) -> Option<PathBuf> {
        let Some(allowed) = &self.0 else {
            return Some(PathBuf::from(path));
        };
        let normalized = normalize(Path::new(path));
        if allowed.iter().any(|a| normalized.starts_with(a)) {
            Some(normalized)
        } else {
            warnings.push(format!(
                "[kafka] config provider path {path} is not allowed to be accessed \
                 ({ALLOWED_PATHS})"
            ));
            None
        }
    }
}

/// `path` with `.` and `name/..` removed, without looking at the file system (`..` at the
/// root stays at the root).
fn normalize(path: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            c => out.push(c),
        }
    }
    out.iter().collect()
}

/// A Java properties file, as `java.util.Properties.load(Reader)` reads it: logical lines
/// (a line ending in an odd number of backslashes continues on the next, whose leading
/// whitespace is dropped), `#` and `!` comments, blank lines, `key=value`, `key: value` or
/// `key value`, and the escapes `\t \n \r \f \uXXXX` (any other escaped character stands for
/// itself). A key given twice keeps its last value. Errors never quote the file.
pub fn parse_properties(text: &str) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for (line_no, line) in logical_lines(text) {
        let (key, value) = split_key_value(&line);
        let key = unescape(key).map_err(|e| anyhow!("line {line_no}: {e}"))?;
        let value = unescape(value).map_err(|e| anyhow!("line {line_no}: {e}"))?;
        out.insert(key, value);
    }
    Ok(out)
}

const CR: u16 = b'\r' as u16;
const LF: u16 = b'\n' as u16;
const BACKSLASH: u16 = b'\\' as u16;

fn is_blank(c: u16) -> bool {
    c == b' ' as u16 || c == b'\t' as u16 || c == 0x0c
}

/// The logical lines of `text` in UTF-16 units (as Java's chars), each with the number of the
/// line it starts on; comments and blank lines are skipped, continuations joined, escapes
/// kept. This follows the JDK's `Properties.LineReader.readLine` step by step.
fn logical_lines(text: &str) -> Vec<(usize, Vec<u16>)> {
    let chars: Vec<u16> = text.encode_utf16().collect();
    let mut lines = Vec::new();
    let mut line: Vec<u16> = Vec::new();
    let mut skip_white_space = true;
    let mut appended_line_begin = false;
    let mut preceding_backslash = false;
    let (mut line_no, mut start_no) = (1usize, 1usize);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        let newline = c == LF || (c == CR && chars.get(i) != Some(&LF));
        if skip_white_space {
            if is_blank(c) {
                continue;
            }
            if !appended_line_begin && (c == CR || c == LF) {
                line_no += usize::from(newline);
                continue;
            }
            skip_white_space = false;
            appended_line_begin = false;
        }
        if line.is_empty() {
            start_no = line_no;
            if c == b'#' as u16 || c == b'!' as u16 {
                // A comment runs to the end of its line; no continuation.
                while i < chars.len() && chars[i] != CR && chars[i] != LF {
                    i += 1;
                }
                skip_white_space = true;
                continue;
            }
        }
        if c != LF && c != CR {
            line.push(c);
            preceding_backslash = c == BACKSLASH && !preceding_backslash;
            continue;
        }
        line_no += usize::from(newline);
        // End of a natural line.
        if line.is_empty() {
            skip_white_space = true;
            continue;
        }
        if preceding_backslash {
            // The backslash is not part of the line; the next line's leading blanks go too.
            line.pop();
            skip_white_space = true;
            appended_line_begin = true;
            preceding_backslash = false;
            if c == CR && chars.get(i) == Some(&LF) {
                i += 1;
                line_no += 1;
            }
        } else {
            lines.push((start_no, std::mem::take(&mut line)));
            skip_white_space = true;
        }
    }
    if !line.is_empty() {
        if preceding_backslash {
            line.pop();
        }
        lines.push((start_no, line));
    }
    lines
}

/// Splits a logical line into its key and value (both still escaped), as `Properties.load0`:
/// the key ends at the first unescaped `=`, `:` or blank; blanks, then at most one `=` or
/// `:`, then blanks separate it from the value.
fn split_key_value(line: &[u16]) -> (&[u16], &[u16]) {
    let is_sep = |c: u16| c == b'=' as u16 || c == b':' as u16;
    let mut key_len = 0;
    let mut value_start = line.len();
    let mut has_sep = false;
    let mut preceding_backslash = false;
    while key_len < line.len() {
        let c = line[key_len];
        if is_sep(c) && !preceding_backslash {
            value_start = key_len + 1;
            has_sep = true;
            break;
        } else if is_blank(c) && !preceding_backslash {
            value_start = key_len + 1;
            break;
        }
        preceding_backslash = c == BACKSLASH && !preceding_backslash;
        key_len += 1;
    }
    while value_start < line.len() {
        let c = line[value_start];
        if !is_blank(c) {
            if !has_sep && is_sep(c) {
                has_sep = true;
            } else {
                break;
            }
        }
        value_start += 1;
    }
    (&line[..key_len], &line[value_start..])
}

/// Java's `loadConvert`: `\t \n \r \f`, `\uXXXX` (UTF-16 units, so a surrogate pair is two
/// escapes), any other `\c` is `c`.
fn unescape(s: &[u16]) -> Result<String> {
    let mut out: Vec<u16> = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        i += 1;
        if c != BACKSLASH {
            out.push(c);
            continue;
        }
        let Some(&e) = s.get(i) else {
            break; // a lone trailing backslash (the line reader leaves none)
        };
        i += 1;
        let escaped = match u8::try_from(e).unwrap_or(0) {
            b'u' => {
                let hex = s
                    .get(i..i + 4)
                    .ok_or_else(|| anyhow!("malformed \\uxxxx encoding"))?;
                i += 4;
                let mut v: u16 = 0;
                for &h in hex {
                    let d = char::from_u32(u32::from(h))
                        .and_then(|ch| ch.to_digit(16))
                        .ok_or_else(|| anyhow!("malformed \\uxxxx encoding"))?;
                    v = (v << 4) | d as u16;
                }
                v
            }
            b't' => b'\t' as u16,
            b'r' => CR,
            b'n' => LF,
            b'f' => 0x0c,
            _ => e,
        };
        out.push(escaped);
    }
    Ok(String::from_utf16_lossy(&out))
}

#[cfg(test)]
#[path = "providers_tests.rs"]
mod tests;
