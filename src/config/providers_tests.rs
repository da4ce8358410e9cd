//! Tests of the config providers: the variable pattern, each provider, the Java properties
//! parser (its expectations are what the JDK's `Properties.load` gives for the same text),
//! the allowlists, variables left as written, and that no resolved secret reaches a warning,
//! an error or `Debug`.

use super::*;

const SECRET: &str = "alice-s3cr3t-value";

fn raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The three providers under the names of the brief's example, plus `extra` settings.
fn with_providers(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut r = raw(&[
        ("config.providers", "file,dir,env"),
        ("config.providers.file.class", FILE_PROVIDER),
        ("config.providers.dir.class", DIRECTORY_PROVIDER),
        ("config.providers.env.class", ENV_VAR_PROVIDER),
    ]);
    r.extend(raw(extra));
    r
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn resolved(r: &mut BTreeMap<String, String>) -> Resolution {
    resolve_with_env(r, &env(&[])).expect("resolves")
}

/// A warning, an unresolved entry or Debug output that shows `SECRET` fails the test.
fn assert_no_secret(res: &Resolution) {
    let all = format!("{:?} {:?} {res:?}", res.warnings, res.unresolved);
    assert!(!all.contains(SECRET), "secret shown: {all}");
}

#[test]
fn variables_follow_kafkas_pattern() {
    let vs = variables("a ${file:/p/x.properties:k} b ${env:NAME} ${x:p:k:with:colons}!");
    let got: Vec<_> = vs.iter().map(|v| (v.provider, v.path, v.key)).collect();
    assert_eq!(
        got,
        [
            ("file", "/p/x.properties", "k"),
            ("env", "", "NAME"),
            ("x", "p", "k:with:colons"),
        ]
    );
    assert_eq!(
        &"a ${file:/p/x.properties:k} b"[vs[0].start..vs[0].end],
        "${file:/p/x.properties:k}"
    );
    // `${p::k}` is an empty path; no colon, or no `}`, is no variable.
    let v = &variables("${p::k}")[0];
    assert_eq!((v.provider, v.path, v.key), ("p", "", "k"));
    assert!(variables("${nocolon} ${unterminated:x").is_empty());
    assert!(variables("$ {a:b} {a:b} $").is_empty());
    // A variable ends at the first `}`, and `[^}]` lets `${` into the provider name.
    let v = &variables("${abc${file:x:y}")[0];
    assert_eq!((v.provider, v.path, v.key), ("abc${file", "x", "y"));
    // Matching resumes after a `${` that did not match.
    let v = &variables("${bad} ${a:b}")[0];
    assert_eq!((v.provider, v.key), ("a", "b"));
}

#[test]
fn file_provider_replaces_every_variable_and_keeps_the_text_around() {
    let dir = tempfile::tempdir().expect("tempdir");
    let props = dir.path().join("secrets.properties");
    std::fs::write(
        &props,
        format!("user=alice\npass={SECRET}\nplain.jaas=M required;\n"),
    )
    .expect("write");
    let p = props.display();
    let mut r = with_providers(&[
        (
            "a",
            &format!("user_${{file:{p}:user}}=\"${{file:{p}:pass}}\";"),
        ),
        ("b", &format!("${{file:{p}:plain.jaas}}")),
        ("c", "no variables here"),
    ]);
    let res = resolved(&mut r);
    assert_eq!(r["a"], format!("user_alice=\"{SECRET}\";"));
    assert_eq!(r["b"], "M required;");
    assert_eq!(r["c"], "no variables here");
    assert!(
        res.unresolved.is_empty() && res.warnings.is_empty(),
        "{res:?}"
    );
}

#[test]
fn unresolved_variables_stay_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let props = dir.path().join("p.properties");
    std::fs::write(&props, "k=v\n").expect("write");
    let p = props.display();
    let missing_key = format!("${{file:{p}:nope}}");
    let mut r = with_providers(&[
        ("missing.key", &format!("x {missing_key} ${{file:{p}:k}}")),
        ("unlisted", "${vault:secret/data:pw}"),
        ("no.path", "${file:k}"),
    ]);
    let res = resolved(&mut r);
    assert_eq!(r["missing.key"], format!("x {missing_key} v"));
    assert_eq!(r["unlisted"], "${vault:secret/data:pw}");
    assert_eq!(r["no.path"], "${file:k}", "the file provider needs a path");
    let settings: Vec<&str> = res.unresolved.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(settings, ["missing.key", "no.path", "unlisted"]);
    assert_eq!(res.unresolved[0].1, missing_key);
    // An error in a later setting names them.
    let e = res.annotate(anyhow!("[kafka] bad"));
    assert!(
        e.to_string()
            .contains(&format!("missing.key ({missing_key})")),
        "{e}"
    );
}

#[test]
fn only_listed_providers_with_a_class_resolve() {
    let vars = [("a", "${env:HOME_X}"), ("b", "${dir:/tmp:x}")];
    // No config.providers: nothing is resolved, whatever the classes say.
    let mut r = with_providers(&vars);
    r.remove("config.providers");
    let res = resolve_with_env(&mut r, &env(&[("HOME_X", "h")])).expect("resolves");
    assert_eq!(r["a"], "${env:HOME_X}");
    assert_eq!(res.unresolved.len(), 2);
    // Listed with spaces around the names; `dir` lacks its class (Kafka skips it).
    let mut r = raw(&[
        ("config.providers", " env , dir "),
        (
            "config.providers.env.class",
            &format!(" {ENV_VAR_PROVIDER} "),
        ),
        ("a", "${env:HOME_X}"),
        ("b", "${dir:/tmp:x}"),
    ]);
    let res = resolve_with_env(&mut r, &env(&[("HOME_X", "h")])).expect("resolves");
    assert_eq!(r["a"], "h");
    assert_eq!(r["b"], "${dir:/tmp:x}");
    assert!(res
        .warnings
        .iter()
        .any(|w| w.contains("config.providers.dir.class")));
    // A class Gregor does not have fails startup, as an unloadable class fails Kafka's.
    let mut r = raw(&[
        ("config.providers", "vault"),
        (
            "config.providers.vault.class",
            "com.example.VaultConfigProvider",
        ),
    ]);
    let e = resolve_with_env(&mut r, &env(&[])).expect_err("unknown class");
    assert!(
        e.to_string().contains("config.providers.vault.class"),
        "{e}"
    );
}

#[test]
fn a_resolved_value_is_not_resolved_again() {
    // ConfigTransformerTest.testSingleLevelOfIndirection.
    let mut r = with_providers(&[("a", "${env:INDIRECT}")]);
    resolve_with_env(
        &mut r,
        &env(&[("INDIRECT", "${env:OTHER}"), ("OTHER", "x")]),
    )
    .expect("ok");
    assert_eq!(r["a"], "${env:OTHER}");
}

#[test]
fn file_provider_errors_name_the_path_not_the_contents() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A missing file fails startup (Kafka: "Could not read properties from file ...").
    let missing = dir.path().join("missing.properties");
    let mut r = with_providers(&[("a", &format!("${{file:{}:k}}", missing.display()))]);
    let e = resolve_with_env(&mut r, &env(&[])).expect_err("missing file");
    assert!(
        e.to_string()
            .contains("could not read properties from file"),
        "{e}"
    );
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
    // A malformed \u escape on the secret's line: the error has the line number only.
    let bad = dir.path().join("bad.properties");
    std::fs::write(&bad, format!("ok=1\npw={SECRET}\\u12\n")).expect("write");
    let mut r = with_providers(&[("a", &format!("${{file:{}:ok}}", bad.display()))]);
    let e = resolve_with_env(&mut r, &env(&[])).expect_err("malformed");
    let text = format!("{e:#}");
    assert!(
        text.contains("line 2") && text.contains("malformed"),
        "{text}"
    );
    assert!(!text.contains(SECRET), "{text}");
}

/// The brief's secrets volume: `plain.jaas` as Kubernetes mounts a Secret (a symlink to
/// `..data/plain.jaas`, `..data` a symlink to a timestamped directory), a plain file, and a
/// subdirectory.
fn secret_volume() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir(root.join("..2024_01_01_00_00_00.1")).expect("mkdir");
    std::fs::write(
        root.join("..2024_01_01_00_00_00.1/jaas"),
        format!("pw=\"{SECRET}\";\n"),
    )
    .expect("write");
    std::os::unix::fs::symlink("..2024_01_01_00_00_00.1", root.join("..data")).expect("link");
    std::os::unix::fs::symlink("..data/jaas", root.join("jaas")).expect("link");
    std::fs::write(root.join("plain"), "  spaced\n\n").expect("write");
    std::fs::create_dir(root.join("subdir")).expect("mkdir");
    std::fs::write(root.join("subdir/inner"), "x").expect("write");
    dir
}

#[test]
fn directory_provider_reads_whole_regular_files() {
    let vol = secret_volume();
    let d = vol.path().display();
    let mut r = with_providers(&[
        ("jaas", &format!("${{dir:{d}:jaas}}")),
        ("plain", &format!("[${{dir:{d}:plain}}]")),
        ("data", &format!("${{dir:{d}:..data}}")),
        ("sub", &format!("${{dir:{d}:subdir}}")),
        ("nested", &format!("${{dir:{d}:subdir/inner}}")),
        ("missing", &format!("${{dir:{d}:nope}}")),
    ]);
    let res = resolved(&mut r);
    // Through both symlinks; the content whole, trailing newline included (Kafka does not trim).
    assert_eq!(r["jaas"], format!("pw=\"{SECRET}\";\n"));
    assert_eq!(r["plain"], "[  spaced\n\n]");
    // Directories, names with a slash and missing files are no keys.
    for k in ["data", "sub", "nested", "missing"] {
        assert!(r[k].starts_with("${dir:"), "{k}: {}", r[k]);
    }
    assert_eq!(res.unresolved.len(), 4);
    assert_no_secret(&res);
    // A path that is not a directory: a warning, and the variable stays.
    let mut r = with_providers(&[("a", "${dir:/nonexistent/dir:jaas}")]);
    let res = resolved(&mut r);
    assert_eq!(r["a"], "${dir:/nonexistent/dir:jaas}");
    assert!(
        res.warnings
            .iter()
            .any(|w| w.contains("is not a directory")),
        "{res:?}"
    );
}

#[test]
fn env_provider_reads_variables_within_its_allowlist() {
    let e = env(&[("SUPER_USERS", "User:admin"), ("KAFKA_PW", SECRET)]);
    let mut r = with_providers(&[
        ("super.users", "${env:SUPER_USERS}"),
        ("p", "${env::KAFKA_PW}"),
    ]);
    resolve_with_env(&mut r, &e).expect("resolves");
    assert_eq!(r["super.users"], "User:admin");
    assert_eq!(r["p"], SECRET, "an empty path is no path");
    // allowlist.pattern must match the whole name (Java's Matcher.matches).
    let mut r = with_providers(&[
        (
            "config.providers.env.param.allowlist.pattern",
            "KAFKA_.*|SUPER",
        ),
        ("super.users", "${env:SUPER_USERS}"),
        ("p", "${env:KAFKA_PW}"),
    ]);
    resolve_with_env(&mut r, &e).expect("resolves");
    assert_eq!(r["super.users"], "${env:SUPER_USERS}");
    assert_eq!(r["p"], SECRET);
    // A path is an error (Kafka: "Path is not supported for EnvVarConfigProvider").
    let mut r = with_providers(&[("p", "${env:/etc:KAFKA_PW}")]);
    let err = resolve_with_env(&mut r, &e).expect_err("path");
    assert!(err.to_string().contains("path is not supported"), "{err}");
    // A pattern that does not compile fails startup.
    let mut r = with_providers(&[("config.providers.env.param.allowlist.pattern", "(")]);
    assert!(resolve_with_env(&mut r, &e).is_err());
}

#[test]
fn allowed_paths_confine_the_file_and_directory_providers() {
    let vol = secret_volume();
    let allowed = vol.path().join("..data");
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        outside.path().join("p.properties"),
        format!("pw={SECRET}\n"),
    )
    .expect("w");
    // From inside the allowed directory up to its sibling `outside` (both in the temp dir).
    let sibling = outside
        .path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let escape = format!("{}/../../{sibling}", allowed.display());
    let mut r = with_providers(&[
        (
            "config.providers.dir.param.allowed.paths",
            &vol.path().display().to_string(),
        ),
        (
            "config.providers.file.param.allowed.paths",
            &allowed.display().to_string(),
        ),
        ("in", &format!("${{dir:{}/./:jaas}}", vol.path().display())),
        (
            "out",
            &format!("${{file:{}/p.properties:pw}}", outside.path().display()),
        ),
        ("escape", &format!("${{file:{escape}/p.properties:pw}}")),
    ]);
    let res = resolved(&mut r);
    assert_eq!(r["in"], format!("pw=\"{SECRET}\";\n"));
    assert!(r["out"].starts_with("${file:"), "outside the allowed paths");
    assert!(
        r["escape"].starts_with("${file:"),
        "`..` is resolved before the check"
    );
    assert_eq!(
        res.warnings
            .iter()
            .filter(|w| w.contains("not allowed"))
            .count(),
        2,
        "{res:?}"
    );
    assert_no_secret(&res);
    // Allowed paths must be absolute and exist.
    for bad in ["relative/dir", "/nonexistent/gregor/dir"] {
        let mut r = with_providers(&[("config.providers.file.param.allowed.paths", bad)]);
        let e = resolve_with_env(&mut r, &env(&[])).expect_err(bad);
        assert!(e.to_string().contains("allowed.paths"), "{e}");
    }
}

#[test]
fn normalize_is_javas() {
    // What Java's Paths.get(p).normalize() gives for each.
    for (p, n) in [
        ("/../etc", "/etc"),
        ("/a/b/../../../etc/x", "/etc/x"),
        ("a/../../b", "../b"),
        ("/a/./b/", "/a/b"),
        ("/mnt/secrets/../secrets2", "/mnt/secrets2"),
    ] {
        assert_eq!(normalize(Path::new(p)), PathBuf::from(n), "{p}");
    }
    // Path.startsWith compares whole names.
    assert!(!normalize(Path::new("/mnt/secrets2/x")).starts_with("/mnt/secrets"));
}

/// A properties file with every rule of `Properties.load`; the expectations are what
/// OpenJDK 25's `Properties.load(Reader)` gives for the same text.
#[test]
fn properties_parse_as_java_does() {
    let text = concat!(
        "# comment \\\n",
        "not.a.continuation=1\n",
        "! bang comment\n",
        "   \n",
        "  leading.ws = value with trailing space   \n",
        "colon:  v2\n",
        "space.sep     v3\n",
        "both = : v4\n",
        "empty.eq=\n",
        "empty.bare\n",
        "multi = first \\\n",
        "        second \\\\\n",
        "backslash.pair=a\\\\\\\\\n",
        "esc\\=key\\:x = \\t\\n\\u0041\\u00e9\\ud83d\\ude00\\z\n",
        "key\\ with\\ spaces=ws\n",
        "cont.key\\\n",
        "  ued = joined\n",
        "dup=1\n",
        "dup=2\n",
        "unicode=héllo ✓\n",
        "crlf=one\\\n",
        "\ttwocrlf2=a\r\n",
        "crlf3=b\\\r\n",
        "  c\r\n",
        "last=\\",
    );
    let p = parse_properties(text).expect("parses");
    let expected = [
        ("backslash.pair", "a\\\\"),
        ("both", ": v4"),
        ("colon", "v2"),
        ("cont.keyued", "joined"),
        ("crlf", "onetwocrlf2=a"),
        ("crlf3", "bc"),
        ("dup", "2"),
        ("empty.bare", ""),
        ("empty.eq", ""),
        ("esc=key:x", "\t\nAé😀z"),
        ("key with spaces", "ws"),
        ("last", ""),
        ("leading.ws", "value with trailing space   "),
        ("multi", "first second \\"),
        ("not.a.continuation", "1"),
        ("space.sep", "v3"),
        ("unicode", "héllo ✓"),
    ];
    let mut got: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    got.sort();
    assert_eq!(got, expected);
    // A JAAS config on continued lines, as an operator would write it.
    let p = parse_properties(
        "plain.jaas=org.apache.kafka.common.security.plain.PlainLoginModule required \\\n    \
         username=\"admin\" password=\"admin-secret\" \\\n    user_alice=\"alice-secret\";\n",
    )
    .expect("parses");
    assert_eq!(
        p["plain.jaas"],
        "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" \
         password=\"admin-secret\" user_alice=\"alice-secret\";"
    );
    for bad in ["k=\\u12", "k=\\u12zz", "\\uXYZW=1"] {
        assert!(parse_properties(bad).is_err(), "{bad}");
    }
}

#[test]
fn errors_and_debug_hide_resolved_secrets() {
    let e = env(&[("JAAS", SECRET)]);
    let mut r = with_providers(&[
        ("sasl.jaas.config", "${env:JAAS}"),
        (
            "listener.name.x.plain.sasl.jaas.config",
            "user_a=\"${nope:x}\"",
        ),
        ("num.partitions", "${env:JAAS}"),
    ]);
    let res = resolve_with_env(&mut r, &e).expect("resolves");
    assert_eq!(r["sasl.jaas.config"], SECRET);
    assert_no_secret(&res);
    // An unconfigured provider's text in a secret is described, not quoted.
    assert_eq!(
        res.unresolved,
        [(
            "listener.name.x.plain.sasl.jaas.config".to_string(),
            "a ${provider:[path:]key} variable".to_string()
        )]
    );
    // A later error that quotes a secret setting's resolved value has it hidden.
    let e = res.annotate(anyhow!("[kafka] sasl.jaas.config: bad {SECRET:?}"));
    assert!(!e.to_string().contains(SECRET), "{e}");
    assert!(e.to_string().contains("[hidden]"), "{e}");
}

#[test]
fn provider_keys_and_sensitive_keys() {
    assert!(is_provider_key("config.providers"));
    assert!(is_provider_key("config.providers.file.param.allowed.paths"));
    assert!(!is_provider_key("config.providersx"));
    for k in [
        "sasl.jaas.config",
        "listener.name.sasl_ssl.plain.sasl.jaas.config",
        "ssl.key.password",
        "sasl.oauthbearer.client.credentials.client.secret",
        "listener.name.ssl.ssl.keystore.key",
    ] {
        assert!(is_sensitive(k), "{k}");
    }
    for k in ["super.users", "ssl.keystore.location", "num.partitions"] {
        assert!(!is_sensitive(k), "{k}");
    }
}

/// The whole startup path: a SASL_PLAINTEXT listener's PLAIN users from `${dir:...}` (a
/// Kubernetes Secret volume) and the broker's own password from `${file:...}`; nothing of them
/// in `Config`'s `Debug`.
#[test]
fn config_resolves_listener_jaas_from_files() {
    use crate::config::{Config, FileConfig, Flags};
    let vol = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        vol.path().join("users"),
        format!("user_admin=\"admin-pw\" user_alice=\"{SECRET}\""),
    )
    .expect("write");
    let props = vol.path().join("broker.properties");
    std::fs::write(&props, "admin.password = admin-pw\n").expect("write");
    let jaas = format!(
        "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" \
         password=\"${{file:{}:admin.password}}\" ${{dir:{}:users}};",
        props.display(),
        vol.path().display()
    );
    let mut kafka = with_providers(&[
        (
            "listeners",
            "PLAINTEXT://127.0.0.1:19092,SASL_PLAINTEXT://127.0.0.1:19093",
        ),
        ("sasl.enabled.mechanisms", "PLAIN"),
        ("listener.name.sasl_plaintext.plain.sasl.jaas.config", &jaas),
        (
            "config.providers.dir.param.allowed.paths",
            &vol.path().display().to_string(),
        ),
    ]);
    let flags = Flags {
        listen: Some("127.0.0.1:19092".into()),
        ..Flags::default()
    };
    let c = Config::build(&flags, FileConfig::default(), kafka.clone()).expect("valid");
    let listener = c
        .listeners
        .listeners
        .iter()
        .find(|l| l.name == "SASL_PLAINTEXT")
        .expect("listener");
    let text = &listener.jaas["PLAIN"];
    let parsed = crate::security::jaas::parse(text).expect("jaas");
    assert_eq!(parsed.password(), Some("admin-pw"));
    assert_eq!(
        parsed.plain_users().get("alice").map(String::as_str),
        Some(SECRET)
    );
    let debug = format!("{c:?}");
    assert!(!debug.contains(SECRET), "secret in Config's Debug");
    assert!(!debug.contains("admin-pw"), "secret in Config's Debug");
    // The users file gone: the listener's JAAS still holds `${dir:...}`, which is no JAAS
    // option, and the error says which variable was left as written, not the password.
    std::fs::remove_file(vol.path().join("users")).expect("rm");
    kafka.insert("num.partitions".into(), "0".into());
    let e = Config::build(&flags, FileConfig::default(), kafka).expect_err("invalid");
    let text = format!("{e:#}");
    assert!(text.contains("unresolved config variables"), "{text}");
    assert!(text.contains(":users}"), "{text}");
    assert!(!text.contains("admin-pw"), "{text}");
}
