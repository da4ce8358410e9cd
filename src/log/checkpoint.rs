//! Offset checkpoint files in Kafka's text format (`recovery-point-offset-checkpoint`,
//! `log-start-offset-checkpoint`): a version line, a count line, then `topic partition offset`
//! lines. Replaced durably (`durable::replace`).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

pub type Checkpoint = BTreeMap<(String, i32), i64>;

pub fn write(path: &Path, entries: &Checkpoint) -> io::Result<()> {
    let mut text = format!("0\n{}\n", entries.len());
    for ((topic, partition), offset) in entries {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    crate::durable::replace(path, text.as_bytes())
}

/// Reads a checkpoint; a missing file is empty, a malformed one is reported and ignored
/// (recovery then scans more, never less).
pub fn read(path: &Path) -> Checkpoint {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Checkpoint::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read checkpoint");
            return Checkpoint::new();
        }
    };
    match parse(&text) {
        Some(c) => c,
        None => {
            tracing::warn!(path = %path.display(), "malformed checkpoint file ignored");
            Checkpoint::new()
        }
    }
}

fn parse(text: &str) -> Option<Checkpoint> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut out = Checkpoint::new();
    for line in lines.take(count) {
        let mut parts = line.rsplitn(3, ' ');
        let offset: i64 = parts.next()?.parse().ok()?;
        let partition: i32 = parts.next()?.parse().ok()?;
        let topic = parts.next()?.to_string();
        out.insert((topic, partition), offset);
    }
    (out.len() == count).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_malformed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("recovery-point-offset-checkpoint");
        let mut c = Checkpoint::new();
        c.insert(("chat-topic".into(), 0), 42);
        c.insert(("a.b_c".into(), 3), 7);
        write(&path, &c).expect("write");
        assert_eq!(read(&path), c);
        std::fs::write(&path, "0\n2\nx 1 2\n").expect("write");
        assert!(read(&path).is_empty());
        assert!(read(&dir.path().join("missing")).is_empty());
    }
}
