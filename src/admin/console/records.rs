//! Records for display: the console's message browser is the one place (besides the log
//! cleaner) that decompresses and walks records, and only for what a person asked to see,
//! within a bounded read. Keys, values and headers are shown as UTF-8, JSON or hex.

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use crate::log::batch::BatchIter;

/// Bytes of a key, value or header value shown at most.
pub const SHOWN_BYTES: usize = 4096;

/// One record as shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// The batch's compression codec.
    pub codec: &'static str,
}

/// The records at or after `from` in `data` (whole batches), at most `limit`, control
/// records left out. Returns them and the offset to continue from.
pub fn decode(data: &Bytes, from: i64, limit: usize) -> Result<(Vec<Shown>, Option<i64>), String> {
    let mut out = Vec::new();
    let mut next = None;
    for (position, view) in BatchIter::new(data) {
        if out.len() >= limit {
            break;
        }
        let codec = match view.codec() {
            Ok(c) => format!("{c:?}").to_lowercase(),
            Err(e) => return Err(e.to_string()),
        };
        let codec: &'static str = match codec.as_str() {
            "none" => "none",
            "gzip" => "gzip",
            "snappy" => "snappy",
            "lz4" => "lz4",
            _ => "zstd",
        };
        let mut buf = data.slice(position..position + view.size());
        let set = RecordBatchDecoder::decode(&mut buf)
            .map_err(|e| format!("cannot decode a batch: {e}"))?;
        for r in set.records {
            next = Some(r.offset + 1);
            if r.control || r.offset < from {
                continue;
            }
            if out.len() >= limit {
                next = Some(r.offset);
                break;
            }
            out.push(Shown {
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                codec,
            });
        }
    }
    Ok((out, next))
}

/// How bytes are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON when the bytes parse as JSON, else UTF-8 when they are text, else hex.
    Auto,
    Utf8,
    Json,
    Hex,
}

impl Format {
    pub fn parse(name: &str) -> Self {
        match name {
            "utf8" => Format::Utf8,
            "json" => Format::Json,
            "hex" => Format::Hex,
            _ => Format::Auto,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Utf8 => "utf8",
            Format::Json => "json",
            Format::Hex => "hex",
        }
    }
}

/// The text to show for `bytes` (at most `SHOWN_BYTES` of them) and the format used.
pub fn render(bytes: &[u8], format: Format) -> (String, &'static str) {
    let cut = &bytes[..bytes.len().min(SHOWN_BYTES)];
    let more = if bytes.len() > SHOWN_BYTES {
        format!(" … ({} bytes)", bytes.len())
    } else {
        String::new()
    };
    let json = || {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
    };
    let text = || std::str::from_utf8(cut).ok().map(str::to_string);
    match format {
        Format::Hex => (hex(cut) + &more, "hex"),
        Format::Json => match json() {
            Some(j) if bytes.len() <= SHOWN_BYTES * 4 => (j, "json"),
            _ => render(bytes, Format::Auto),
        },
        Format::Utf8 => match text() {
            Some(t) => (t + &more, "utf8"),
            None => (String::from_utf8_lossy(cut).into_owned() + &more, "utf8"),
        },
        Format::Auto => {
            if bytes.len() <= SHOWN_BYTES && bytes.first().is_some_and(|b| *b == b'{' || *b == b'[')
            {
                if let Some(j) = json() {
                    return (j, "json");
                }
            }
            match text().filter(|t| {
                t.chars()
                    .all(|c| !c.is_control() || c == '\n' || c == '\t' || c == '\r')
            }) {
                Some(t) => (t + &more, "utf8"),
                None => (hex(cut) + &more, "hex"),
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::testing;
    use kafka_protocol::records::Compression;

    #[test]
    fn decodes_compressed_batches_and_starts_inside_one() {
        let mut data = testing::encode_batch(5, 1_000, 8, Compression::Lz4);
        let mut second = testing::encode_batch(3, 1_005, 8, Compression::None);
        second[..8].copy_from_slice(&5i64.to_be_bytes());
        data.extend(second);
        let data = Bytes::from(data);
        let (shown, next) = decode(&data, 2, 4).unwrap();
        let offsets: Vec<i64> = shown.iter().map(|s| s.offset).collect();
        assert_eq!(offsets, vec![2, 3, 4, 5]);
        assert_eq!(shown[0].codec, "lz4");
        assert_eq!(shown[0].key.as_deref(), Some(&b"k2"[..]));
        assert_eq!(shown[3].codec, "none");
        assert_eq!(next, Some(6));
    }

    #[test]
    fn formats() {
        assert_eq!(
            render(b"{\"a\":1}", Format::Auto),
            ("{\n  \"a\": 1\n}".to_string(), "json")
        );
        assert_eq!(
            render(b"hello", Format::Auto),
            ("hello".to_string(), "utf8")
        );
        assert_eq!(
            render(&[0, 255], Format::Auto),
            ("00 ff".to_string(), "hex")
        );
        assert_eq!(render(b"hi", Format::Hex), ("68 69".to_string(), "hex"));
        assert_eq!(render(b"not json", Format::Json).1, "utf8");
        let big = vec![b'a'; SHOWN_BYTES + 10];
        assert!(render(&big, Format::Utf8)
            .0
            .ends_with(&format!("({} bytes)", SHOWN_BYTES + 10)));
    }
}
