//! The direction of dependency between Gregor's modules (DESIGN.md, "Source layout"):
//!
//! ```text
//! server, admin, serve ─▶ api ─▶ txn, share ─▶ group ─▶ replica ─▶ log
//!                                  └─────────┴──▶ meta
//! durable, kafka_uuid: leaves that log and meta both use
//! security: a leaf (TLS, principals, SASL mechanisms) that meta, replica and api use
//! quota: client quota sensors over the metadata image's quotas, used by api and server;
//!        its windowed rate (`quota::rate`) also measures replica's replication throttles
//! ```
//!
//! One known exception: `replica` names `config` for `config::dynamic` (the effective broker
//! config, static settings with the dynamic broker configs of the metadata image layered on
//! top), while `config` names `replica` and `group` for their settings structs. The dynamic
//! layer belongs below `replica`; until it moves there, the rule allows `replica → config`.
//!
//! A lower layer never reaches up: `log` knows nothing above it, `meta` depends on neither
//! `log` nor `api`, `replica` and `group` get narrow handles and never see the broker. This
//! test reads every `crate::<module>` path in each module's files, so that a shortcut cannot
//! creep back in unnoticed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each layered module and the crate modules it may name.
const RULES: &[(&str, &[&str])] = &[
    ("durable", &[]),
    ("kafka_uuid", &[]),
    ("security", &[]),
    ("log", &["durable", "kafka_uuid"]),
    ("meta", &["durable", "kafka_uuid", "security"]),
    ("quota", &["meta"]),
    (
        "replica",
        &[
            "config",
            "quota",
            "log",
            "meta",
            "durable",
            "kafka_uuid",
            "security",
        ],
    ),
    (
        "group",
        &["replica", "log", "meta", "durable", "kafka_uuid"],
    ),
    (
        "txn",
        &["group", "replica", "log", "meta", "durable", "kafka_uuid"],
    ),
    (
        "share",
        &["group", "replica", "log", "meta", "durable", "kafka_uuid"],
    ),
    (
        "api",
        &[
            "broker",
            "config",
            "group",
            "txn",
            "share",
            "quota",
            "replica",
            "log",
            "meta",
            "durable",
            "kafka_uuid",
            "security",
        ],
    ),
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .expect("list dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for e in entries {
            rust_files(&e, out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The files of module `name`: `src/<name>.rs` and everything under `src/<name>/`.
fn module_files(src: &Path, name: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&src.join(format!("{name}.rs")), &mut files);
    rust_files(&src.join(name), &mut files);
    assert!(!files.is_empty(), "module {name} has no files");
    files
}

/// The crate modules named as `crate::<module>` in `text`, comments and doc comments
/// excluded.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let heads: Vec<&str> = match after.strip_prefix('{') {
                // `crate::{a, b::c}`: each item's first segment.
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .collect(),
                None => vec![after],
            };
            for head in heads {
                let name: String = head
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
            rest = after;
        }
    }
    found
}

#[test]
fn lower_layers_never_reach_up() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (module, allowed) in RULES {
        for file in module_files(&src, module) {
            let text = std::fs::read_to_string(&file).expect("read source");
            for used in crate_paths(&text) {
                if used != *module && !allowed.contains(&used.as_str()) {
                    violations.push(format!(
                        "{} ({module}) uses crate::{used}",
                        file.strip_prefix(&src).unwrap_or(&file).display()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "dependencies against the layering:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_sees_crate_paths_and_ignores_comments() {
    let text = "use crate::log::batch;\nlet x = crate::meta::image::X; // crate::api here\n/// crate::broker in a doc\nuse crate::{durable, x};";
    let found = crate_paths(text);
    assert!(found.contains("log") && found.contains("meta"));
    assert!(!found.contains("api") && !found.contains("broker"));
    assert!(found.contains("durable") && found.contains("x"));
}
