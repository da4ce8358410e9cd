//! The frame every console page shares (head, navigation, the viewer's name) and the few
//! text helpers pages render with: HTML escaping, byte sizes, numbers.

use std::fmt::Write as _;

/// The pages, in navigation order: (path, label).
const NAV: [(&str, &str); 5] = [
    ("/console/cluster", "Cluster"),
    ("/console/topics", "Topics"),
    ("/console/groups", "Consumer groups"),
    ("/console/messages", "Messages"),
    ("/console/throughput", "Throughput"),
];

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment or query value.
pub fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// 1536 -> "1.5 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A whole page: `active` is the navigation entry to highlight.
pub fn page(title: &str, active: &str, viewer: Option<&str>, body: &str) -> String {
    let mut nav = String::new();
    for (path, label) in NAV {
        let class = if path == active {
            " class=\"active\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{path}\"{class}>{label}</a>");
    }
    let who = match viewer {
        Some(user) => format!("<span class=\"who\">User:{}</span>", esc(user)),
        None => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · Gregor console</title>\
<link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
<script src=\"/console/assets/console.js\" defer></script></head>\
<body><header><a class=\"brand\" href=\"/console/cluster\">Gregor</a><nav>{nav}</nav>{who}</header>\
<main><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title)
    )
}

/// An error or notice box.
pub fn notice(text: &str) -> String {
    format!("<p class=\"notice\">{}</p>", esc(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(url("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(bytes(10), "10 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert!(
            page("T<", "/console/topics", Some("al<ice"), "<p>x</p>").contains("User:al&lt;ice")
        );
    }
}
