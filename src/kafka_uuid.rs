//! Kafka's text form of UUIDs (topic ids, cluster ids): URL-safe base64 without padding.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use uuid::Uuid;

pub fn kafka_uuid(id: &Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn parse_kafka_uuid(s: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
    Uuid::from_slice(&bytes).ok()
}

/// A random id that is never the zero UUID nor Kafka's reserved "metadata topic" id, and whose
/// text form does not start with '-' (Kafka's rule, so it is never read as a CLI flag).
pub fn random_kafka_uuid() -> Uuid {
    loop {
        let id = Uuid::new_v4();
        if id.as_u128() > 1 && !kafka_uuid(&id).starts_with('-') {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let id = random_kafka_uuid();
        let s = kafka_uuid(&id);
        assert_eq!(s.len(), 22);
        assert_eq!(parse_kafka_uuid(&s), Some(id));
        assert_eq!(parse_kafka_uuid("not base64!"), None);
    }
}
