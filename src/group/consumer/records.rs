//! The `__consumer_offsets` records of consumer groups (KIP-848), in Kafka's formats: keys are
//! non-flexible (version 3 group epoch, 4 subscription metadata, 5 member subscription, 6
//! target assignment epoch, 7 member target assignment, 8 member current assignment); values
//! are version 0, flexible (compact strings and arrays, tagged fields, which are skipped on
//! read). A tombstone (null value) deletes its key.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

use super::{MemberState, TopicPartitions};
use crate::group::records::RecordError;

pub const GROUP_EPOCH_KEY: i16 = 3;
pub const PARTITION_METADATA_KEY: i16 = 4;
pub const MEMBER_METADATA_KEY: i16 = 5;
pub const TARGET_EPOCH_KEY: i16 = 6;
pub const TARGET_MEMBER_KEY: i16 = 7;
pub const CURRENT_ASSIGNMENT_KEY: i16 = 8;

/// A consumer group record key: its version names the record type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerKey {
    pub version: i16,
    pub group: String,
    /// For the per-member records (versions 5, 7 and 8).
    pub member: Option<String>,
}

/// A topic in the subscription metadata: id, name, partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub topic_id: Uuid,
    pub name: String,
    pub partitions: i32,
}

/// ConsumerGroupMemberMetadataValue: a member's subscription.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberMetadataValue {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
    /// Set for a member that speaks the classic protocol inside a consumer group (the
    /// value's tagged field 0, as Kafka stores it).
    pub classic: Option<ClassicMemberMetadata>,
}

/// ConsumerGroupMemberMetadataValue.ClassicMemberMetadata: what a classic member joined with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClassicMemberMetadata {
    pub session_timeout_ms: i32,
    /// (protocol name, metadata), in the member's order of preference.
    pub supported_protocols: Vec<(String, Bytes)>,
}

impl ClassicMemberMetadata {
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_i32(self.session_timeout_ms);
        put_uvarint(buf, self.supported_protocols.len() as u32 + 1);
        for (name, metadata) in &self.supported_protocols {
            put_compact_string(buf, Some(name));
            put_uvarint(buf, metadata.len() as u32 + 1);
            buf.put_slice(metadata);
            put_uvarint(buf, 0);
        }
        put_uvarint(buf, 0);
    }

    fn decode(buf: &mut &[u8]) -> Result<Self, RecordError> {
        let session_timeout_ms = get_i32(buf)?;
        let mut supported_protocols = Vec::new();
        for _ in 0..get_array_len(buf)? {
            let name = get_compact_string(buf)?.unwrap_or_default();
            let len = get_uvarint(buf)?.saturating_sub(1) as usize;
            if buf.len() < len {
                return Err(RecordError("bytes past the end"));
            }
            let metadata = Bytes::copy_from_slice(&buf[..len]);
            buf.advance(len);
            skip_tagged_fields(buf)?;
            supported_protocols.push((name, metadata));
        }
        skip_tagged_fields(buf)?;
        Ok(Self {
            session_timeout_ms,
            supported_protocols,
        })
    }
}

/// ConsumerGroupCurrentMemberAssignmentValue: where a member is in its reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentAssignmentValue {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: MemberState,
    pub assigned: TopicPartitions,
    pub pending_revocation: TopicPartitions,
}

/// One consumer group record, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerRecord {
    GroupEpoch(Option<i32>),
    PartitionMetadata(Option<Vec<TopicMetadata>>),
    MemberMetadata(String, Option<MemberMetadataValue>),
    TargetEpoch(Option<i32>),
    TargetMember(String, Option<TopicPartitions>),
    CurrentAssignment(String, Option<CurrentAssignmentValue>),
}

fn put_string(buf: &mut BytesMut, s: &str) {
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_compact_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        None => put_uvarint(buf, 0),
        Some(s) => {
            put_uvarint(buf, s.len() as u32 + 1);
            buf.put_slice(s.as_bytes());
        }
    }
}

fn put_partitions(buf: &mut BytesMut, tps: &TopicPartitions) {
    put_uvarint(buf, tps.len() as u32 + 1);
    for (id, parts) in tps {
        buf.put_slice(id.as_bytes());
        put_uvarint(buf, parts.len() as u32 + 1);
        for p in parts {
            buf.put_i32(*p);
        }
        put_uvarint(buf, 0); // tagged fields
    }
}

fn get_uvarint(buf: &mut &[u8]) -> Result<u32, RecordError> {
    let mut v: u32 = 0;
    for shift in (0..35).step_by(7) {
        let b = buf.try_get_u8().map_err(|_| RecordError("truncated"))?;
        v |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(RecordError("varint too long"))
}

fn get_i32(buf: &mut &[u8]) -> Result<i32, RecordError> {
    buf.try_get_i32().map_err(|_| RecordError("truncated"))
}

fn get_string(buf: &mut &[u8]) -> Result<String, RecordError> {
    let len = buf.try_get_i16().map_err(|_| RecordError("truncated"))?;
    if len < 0 || buf.len() < len as usize {
        return Err(RecordError("bad string"));
    }
    let s = std::str::from_utf8(&buf[..len as usize]).map_err(|_| RecordError("not UTF-8"))?;
    let s = s.to_string();
    buf.advance(len as usize);
    Ok(s)
}

fn get_compact_string(buf: &mut &[u8]) -> Result<Option<String>, RecordError> {
    let n = get_uvarint(buf)? as usize;
    if n == 0 {
        return Ok(None);
    }
    let len = n - 1;
    if buf.len() < len {
        return Err(RecordError("string past the end"));
    }
    let s = std::str::from_utf8(&buf[..len]).map_err(|_| RecordError("not UTF-8"))?;
    let s = s.to_string();
    buf.advance(len);
    Ok(Some(s))
}

/// A compact array's length (0 for null), bounded by what is left to read.
fn get_array_len(buf: &mut &[u8]) -> Result<usize, RecordError> {
    let n = get_uvarint(buf)? as usize;
    let len = n.saturating_sub(1);
    if len > buf.len() {
        return Err(RecordError("array past the end"));
    }
    Ok(len)
}

fn get_uuid(buf: &mut &[u8]) -> Result<Uuid, RecordError> {
    if buf.len() < 16 {
        return Err(RecordError("truncated uuid"));
    }
    let mut b = [0u8; 16];
    b.copy_from_slice(&buf[..16]);
    buf.advance(16);
    Ok(Uuid::from_bytes(b))
}

fn skip_tagged_fields(buf: &mut &[u8]) -> Result<(), RecordError> {
    let n = get_uvarint(buf)?;
    for _ in 0..n {
        let _tag = get_uvarint(buf)?;
        let size = get_uvarint(buf)? as usize;
        if buf.len() < size {
            return Err(RecordError("tagged field past the end"));
        }
        buf.advance(size);
    }
    Ok(())
}

/// The member metadata value's tagged fields: tag 0 is ClassicMemberMetadata, others skipped.
fn classic_tagged_field(buf: &mut &[u8]) -> Result<Option<ClassicMemberMetadata>, RecordError> {
    let mut classic = None;
    for _ in 0..get_uvarint(buf)? {
        let tag = get_uvarint(buf)?;
        let size = get_uvarint(buf)? as usize;
        if buf.len() < size {
            return Err(RecordError("tagged field past the end"));
        }
        let mut field = &buf[..size];
        if tag == 0 {
            classic = Some(ClassicMemberMetadata::decode(&mut field)?);
        }
        buf.advance(size);
    }
    Ok(classic)
}

fn get_partitions(buf: &mut &[u8]) -> Result<TopicPartitions, RecordError> {
    let mut out = TopicPartitions::new();
    for _ in 0..get_array_len(buf)? {
        let id = get_uuid(buf)?;
        let set = out.entry(id).or_default();
        for _ in 0..get_array_len(buf)? {
            set.insert(get_i32(buf)?);
        }
        skip_tagged_fields(buf)?;
    }
    Ok(out)
}

fn value_header(buf: &mut &[u8]) -> Result<(), RecordError> {
    let version = buf.try_get_i16().map_err(|_| RecordError("truncated"))?;
    if version != 0 {
        return Err(RecordError("unsupported consumer group value version"));
    }
    Ok(())
}

impl ConsumerKey {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(self.version);
        put_string(&mut buf, &self.group);
        if let Some(m) = &self.member {
            put_string(&mut buf, m);
        }
        buf.freeze()
    }

    /// Decodes the key of a consumer group record (after its version, already read).
    pub fn decode(version: i16, mut buf: &[u8]) -> Result<Self, RecordError> {
        let group = get_string(&mut buf)?;
        let member = match version {
            MEMBER_METADATA_KEY | TARGET_MEMBER_KEY | CURRENT_ASSIGNMENT_KEY => {
                Some(get_string(&mut buf)?)
            }
            _ => None,
        };
        Ok(Self {
            version,
            group,
            member,
        })
    }
}

impl ConsumerRecord {
    /// The record's key and value bytes.
    pub fn encode(&self, group: &str) -> (Bytes, Option<Bytes>) {
        let key = |version: i16, member: Option<&String>| ConsumerKey {
            version,
            group: group.to_string(),
            member: member.cloned(),
        };
        let mut buf = BytesMut::new();
        buf.put_i16(0);
        let (k, has_value) = match self {
            ConsumerRecord::GroupEpoch(v) => {
                if let Some(epoch) = v {
                    buf.put_i32(*epoch);
                }
                (key(GROUP_EPOCH_KEY, None), v.is_some())
            }
            ConsumerRecord::TargetEpoch(v) => {
                if let Some(epoch) = v {
                    buf.put_i32(*epoch);
                }
                (key(TARGET_EPOCH_KEY, None), v.is_some())
            }
            ConsumerRecord::PartitionMetadata(v) => {
                if let Some(topics) = v {
                    put_uvarint(&mut buf, topics.len() as u32 + 1);
                    for t in topics {
                        buf.put_slice(t.topic_id.as_bytes());
                        put_compact_string(&mut buf, Some(&t.name));
                        buf.put_i32(t.partitions);
                        put_uvarint(&mut buf, 1); // no per-partition rack metadata
                        put_uvarint(&mut buf, 0);
                    }
                }
                (key(PARTITION_METADATA_KEY, None), v.is_some())
            }
            ConsumerRecord::MemberMetadata(member, v) => {
                if let Some(m) = v {
                    put_compact_string(&mut buf, m.instance_id.as_deref());
                    put_compact_string(&mut buf, m.rack_id.as_deref());
                    put_compact_string(&mut buf, Some(&m.client_id));
                    put_compact_string(&mut buf, Some(&m.client_host));
                    put_uvarint(&mut buf, m.subscribed_topic_names.len() as u32 + 1);
                    for t in &m.subscribed_topic_names {
                        put_compact_string(&mut buf, Some(t));
                    }
                    put_compact_string(&mut buf, m.subscribed_topic_regex.as_deref());
                    buf.put_i32(m.rebalance_timeout_ms);
                    put_compact_string(&mut buf, m.server_assignor.as_deref());
                    if let Some(c) = &m.classic {
                        // The value's tagged fields: tag 0, ClassicMemberMetadata.
                        let mut field = BytesMut::new();
                        c.encode(&mut field);
                        put_uvarint(&mut buf, 1);
                        put_uvarint(&mut buf, 0);
                        put_uvarint(&mut buf, field.len() as u32);
                        buf.put_slice(&field);
                        return (
                            key(MEMBER_METADATA_KEY, Some(member)).encode(),
                            Some(buf.freeze()),
                        );
                    }
                }
                (key(MEMBER_METADATA_KEY, Some(member)), v.is_some())
            }
            ConsumerRecord::TargetMember(member, v) => {
                if let Some(tps) = v {
                    put_partitions(&mut buf, tps);
                }
                (key(TARGET_MEMBER_KEY, Some(member)), v.is_some())
            }
            ConsumerRecord::CurrentAssignment(member, v) => {
                if let Some(c) = v {
                    buf.put_i32(c.member_epoch);
                    buf.put_i32(c.previous_member_epoch);
                    buf.put_i8(c.state.code());
                    put_partitions(&mut buf, &c.assigned);
                    put_partitions(&mut buf, &c.pending_revocation);
                }
                (key(CURRENT_ASSIGNMENT_KEY, Some(member)), v.is_some())
            }
        };
        put_uvarint(&mut buf, 0); // the value's tagged fields
        (k.encode(), has_value.then(|| buf.freeze()))
    }

    /// Decodes a record from its key and value (None: a tombstone).
    pub fn decode(key: &ConsumerKey, value: Option<&[u8]>) -> Result<Self, RecordError> {
        let member = || key.member.clone().unwrap_or_default();
        let Some(mut buf) = value else {
            return Ok(match key.version {
                GROUP_EPOCH_KEY => ConsumerRecord::GroupEpoch(None),
                PARTITION_METADATA_KEY => ConsumerRecord::PartitionMetadata(None),
                MEMBER_METADATA_KEY => ConsumerRecord::MemberMetadata(member(), None),
                TARGET_EPOCH_KEY => ConsumerRecord::TargetEpoch(None),
                TARGET_MEMBER_KEY => ConsumerRecord::TargetMember(member(), None),
                _ => ConsumerRecord::CurrentAssignment(member(), None),
            });
        };
        let buf = &mut buf;
        value_header(buf)?;
        // Tagged fields Kafka may add later (after the known fields) are ignored.
        Ok(match key.version {
            GROUP_EPOCH_KEY => ConsumerRecord::GroupEpoch(Some(get_i32(buf)?)),
            TARGET_EPOCH_KEY => ConsumerRecord::TargetEpoch(Some(get_i32(buf)?)),
            PARTITION_METADATA_KEY => {
                let mut topics = Vec::new();
                for _ in 0..get_array_len(buf)? {
                    let topic_id = get_uuid(buf)?;
                    let name = get_compact_string(buf)?.unwrap_or_default();
                    let partitions = get_i32(buf)?;
                    for _ in 0..get_array_len(buf)? {
                        let _partition = get_i32(buf)?;
                        for _ in 0..get_array_len(buf)? {
                            get_compact_string(buf)?;
                        }
                        skip_tagged_fields(buf)?;
                    }
                    skip_tagged_fields(buf)?;
                    topics.push(TopicMetadata {
                        topic_id,
                        name,
                        partitions,
                    });
                }
                ConsumerRecord::PartitionMetadata(Some(topics))
            }
            MEMBER_METADATA_KEY => {
                let instance_id = get_compact_string(buf)?;
                let rack_id = get_compact_string(buf)?;
                let client_id = get_compact_string(buf)?.unwrap_or_default();
                let client_host = get_compact_string(buf)?.unwrap_or_default();
                let mut subscribed_topic_names = Vec::new();
                for _ in 0..get_array_len(buf)? {
                    subscribed_topic_names.push(get_compact_string(buf)?.unwrap_or_default());
                }
                let subscribed_topic_regex = get_compact_string(buf)?;
                let rebalance_timeout_ms = get_i32(buf)?;
                let server_assignor = get_compact_string(buf)?;
                let classic = classic_tagged_field(buf)?;
                ConsumerRecord::MemberMetadata(
                    member(),
                    Some(MemberMetadataValue {
                        instance_id,
                        rack_id,
                        client_id,
                        client_host,
                        subscribed_topic_names,
                        subscribed_topic_regex,
                        rebalance_timeout_ms,
                        server_assignor,
                        classic,
                    }),
                )
            }
            TARGET_MEMBER_KEY => ConsumerRecord::TargetMember(member(), Some(get_partitions(buf)?)),
            CURRENT_ASSIGNMENT_KEY => {
                let member_epoch = get_i32(buf)?;
                let previous_member_epoch = get_i32(buf)?;
                let state =
                    MemberState::from_code(buf.try_get_i8().map_err(|_| RecordError("truncated"))?);
                let assigned = get_partitions(buf)?;
                let pending_revocation = get_partitions(buf)?;
                ConsumerRecord::CurrentAssignment(
                    member(),
                    Some(CurrentAssignmentValue {
                        member_epoch,
                        previous_member_epoch,
                        state,
                        assigned,
                        pending_revocation,
                    }),
                )
            }
            _ => return Err(RecordError("not a consumer group record")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(r: ConsumerRecord) {
        let (k, v) = r.encode("g");
        let mut kb = &k[..];
        let version = kb.get_i16();
        let key = ConsumerKey::decode(version, kb).expect("key decodes");
        assert_eq!(key.group, "g");
        assert_eq!(
            ConsumerRecord::decode(&key, v.as_deref()).expect("decodes"),
            r
        );
    }

    #[test]
    fn records_roundtrip() {
        let id = Uuid::new_v4();
        let tps: TopicPartitions = [(id, [0, 3, 5].into_iter().collect())].into();
        roundtrip(ConsumerRecord::GroupEpoch(Some(7)));
        roundtrip(ConsumerRecord::GroupEpoch(None));
        roundtrip(ConsumerRecord::TargetEpoch(Some(7)));
        roundtrip(ConsumerRecord::PartitionMetadata(Some(vec![
            TopicMetadata {
                topic_id: id,
                name: "t".into(),
                partitions: 12,
            },
        ])));
        roundtrip(ConsumerRecord::MemberMetadata(
            "m".into(),
            Some(MemberMetadataValue {
                instance_id: Some("i".into()),
                rack_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                subscribed_topic_names: vec!["a".into(), "b".into()],
                subscribed_topic_regex: None,
                rebalance_timeout_ms: 300_000,
                server_assignor: Some("range".into()),
                classic: None,
            }),
        ));
        roundtrip(ConsumerRecord::MemberMetadata(
            "c".into(),
            Some(MemberMetadataValue {
                client_id: "c".into(),
                subscribed_topic_names: vec!["a".into()],
                rebalance_timeout_ms: 300_000,
                classic: Some(ClassicMemberMetadata {
                    session_timeout_ms: 45_000,
                    supported_protocols: vec![
                        ("range".into(), Bytes::from_static(&[0, 3, 0, 0])),
                        ("cooperative-sticky".into(), Bytes::new()),
                    ],
                }),
                ..Default::default()
            }),
        ));
        roundtrip(ConsumerRecord::MemberMetadata("m".into(), None));
        roundtrip(ConsumerRecord::TargetMember("m".into(), Some(tps.clone())));
        roundtrip(ConsumerRecord::CurrentAssignment(
            "m".into(),
            Some(CurrentAssignmentValue {
                member_epoch: 4,
                previous_member_epoch: 3,
                state: MemberState::UnrevokedPartitions,
                assigned: tps.clone(),
                pending_revocation: TopicPartitions::new(),
            }),
        ));
    }

    #[test]
    fn kafka_layout_of_group_epoch_and_target_member() {
        // ConsumerGroupMetadataKey v3: version, group string.
        let (k, v) = ConsumerRecord::GroupEpoch(Some(1)).encode("g");
        assert_eq!(&k[..], &[0, 3, 0, 1, b'g']);
        // Value v0: version, epoch, no tagged fields.
        assert_eq!(v.as_deref(), Some(&[0, 0, 0, 0, 0, 1, 0][..]));
        let id = Uuid::from_u128(1);
        let (_, v) =
            ConsumerRecord::TargetMember("m".into(), Some([(id, [2].into())].into())).encode("g");
        let v = v.expect("value");
        // version, 1 topic (+1), uuid, 1 partition (+1), 2, tags, tags
        assert_eq!(v.len(), 2 + 1 + 16 + 1 + 4 + 1 + 1);
        assert_eq!(v[2], 2);
    }

    #[test]
    fn malformed_values_are_errors() {
        let key = ConsumerKey {
            version: CURRENT_ASSIGNMENT_KEY,
            group: "g".into(),
            member: Some("m".into()),
        };
        assert!(ConsumerRecord::decode(&key, Some(&[0, 0, 0])).is_err());
        assert!(
            ConsumerRecord::decode(&key, Some(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0xff, 0xff]))
                .is_err()
        );
    }
}
