//! Client quotas as the metadata log holds them (Kafka's ClientQuotaRecord): quota values per
//! entity, where an entity is a user, a client id, or both, each either named or the default
//! (an entity name of null in the protocol). Every broker builds the same store by applying
//! the same records, and resolves which quota applies to a (user, client id) the way Kafka's
//! default quota callback does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The quota keys of users and client ids (Kafka's `QuotaConfig.userAndClientQuotaConfigs`).
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
/// Accepted and stored as Kafka does; Gregor does not throttle topic mutations with it.
pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";

/// The type Kafka declares for a quota key: integral keys reject fractions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKeyType {
    Long,
    Double,
}

/// The type of a user or client-id quota key, or `None` for a key Kafka does not know.
pub fn key_type(key: &str) -> Option<QuotaKeyType> {
    match key {
        PRODUCER_BYTE_RATE | CONSUMER_BYTE_RATE => Some(QuotaKeyType::Long),
        REQUEST_PERCENTAGE | CONTROLLER_MUTATION_RATE => Some(QuotaKeyType::Double),
        _ => None,
    }
}

/// One side of an entity: a named user or client id, or the default for all of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntityName {
    Default,
    Named(String),
}

impl EntityName {
    /// From the protocol's entity name (null is the default).
    pub fn from_protocol(name: Option<&str>) -> Self {
        match name {
            None => EntityName::Default,
            Some(n) => EntityName::Named(n.to_string()),
        }
    }

    /// The protocol's entity name (null for the default).
    pub fn to_protocol(&self) -> Option<&str> {
        match self {
            EntityName::Default => None,
            EntityName::Named(n) => Some(n),
        }
    }
}

/// A quota entity: a user, a client id, or a (user, client id) pair.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    pub user: Option<EntityName>,
    pub client_id: Option<EntityName>,
}

impl QuotaEntity {
    pub fn new(user: Option<EntityName>, client_id: Option<EntityName>) -> Self {
        Self { user, client_id }
    }

    fn named(user: Option<&str>, client_id: Option<&str>) -> Self {
        Self {
            user: user.map(|u| EntityName::Named(u.to_string())),
            client_id: client_id.map(|c| EntityName::Named(c.to_string())),
        }
    }

    /// `(entity type, entity name)` pairs as the protocol lists them.
    pub fn components(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut out = Vec::with_capacity(2);
        if let Some(u) = &self.user {
            out.push(("user", u.to_protocol()));
        }
        if let Some(c) = &self.client_id {
            out.push(("client-id", c.to_protocol()));
        }
        out
    }
}

/// A quota value. Stored by its bits, so records and images compare exactly and any value
/// survives the JSON snapshot.
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(from = "u64", into = "u64")]
pub struct QuotaValue(pub f64);

impl From<u64> for QuotaValue {
    fn from(bits: u64) -> Self {
        QuotaValue(f64::from_bits(bits))
    }
}

impl From<QuotaValue> for u64 {
    fn from(v: QuotaValue) -> u64 {
        v.0.to_bits()
    }
}

impl PartialEq for QuotaValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for QuotaValue {}

impl std::fmt::Debug for QuotaValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Sets (`value` some) or removes (`value` none) one quota key of one entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientQuotaRecord {
    pub entity: QuotaEntity,
    pub key: String,
    pub value: Option<QuotaValue>,
}

/// Every entity's quotas. An entity without any quota is not kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<(QuotaEntity, BTreeMap<String, QuotaValue>)>")]
#[serde(into = "Vec<(QuotaEntity, BTreeMap<String, QuotaValue>)>")]
pub struct ClientQuotaStore {
    entities: BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>>,
}

impl From<Vec<(QuotaEntity, BTreeMap<String, QuotaValue>)>> for ClientQuotaStore {
    fn from(v: Vec<(QuotaEntity, BTreeMap<String, QuotaValue>)>) -> Self {
        Self {
            entities: v.into_iter().filter(|(_, q)| !q.is_empty()).collect(),
        }
    }
}

impl From<ClientQuotaStore> for Vec<(QuotaEntity, BTreeMap<String, QuotaValue>)> {
    fn from(s: ClientQuotaStore) -> Self {
        s.entities.into_iter().collect()
    }
}

/// The quota that applies to a client for one key: Kafka's metric tags (whose sensor records
/// the client's usage; an empty tag stands for "any") and the limit.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedQuota {
    pub user_tag: String,
    pub client_tag: String,
    pub limit: f64,
}

impl ClientQuotaStore {
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// Applies one record (as Kafka's ClientQuotaControlManager.replay does).
    pub fn apply(&mut self, record: &ClientQuotaRecord) {
        match record.value {
            Some(v) => {
                self.entities
                    .entry(record.entity.clone())
                    .or_default()
                    .insert(record.key.clone(), v);
            }
            None => {
                if let Some(q) = self.entities.get_mut(&record.entity) {
                    q.remove(&record.key);
                    if q.is_empty() {
                        self.entities.remove(&record.entity);
                    }
                }
            }
        }
    }

    /// The quotas of one entity, if it has any.
    pub fn get(&self, entity: &QuotaEntity) -> Option<&BTreeMap<String, QuotaValue>> {
        self.entities.get(entity)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&QuotaEntity, &BTreeMap<String, QuotaValue>)> {
        self.entities.iter()
    }

    fn has(&self, key: &str, entity: &QuotaEntity) -> bool {
        self.entities
            .get(entity)
            .is_some_and(|q| q.contains_key(key))
    }

    fn value(&self, key: &str, entity: &QuotaEntity) -> Option<f64> {
        self.entities
            .get(entity)
            .and_then(|q| q.get(key))
            .map(|v| v.0)
    }

    /// The quota of `key` for `user` (the principal's name) and `client_id`, resolved in
    /// Kafka's order: /users/<user>/clients/<client-id>, /users/<user>/clients/<default>,
    /// /users/<user>, /users/<default>/clients/<client-id>, /users/<default>/clients/<default>,
    /// /users/<default>, /clients/<client-id>, /clients/<default>. `None`: no quota applies.
    pub fn resolve(&self, key: &str, user: &str, client_id: &str) -> Option<ResolvedQuota> {
        let default = Some(EntityName::Default);
        let named = |n: &str| Some(EntityName::Named(n.to_string()));
        let has =
            |u: Option<EntityName>, c: Option<EntityName>| self.has(key, &QuotaEntity::new(u, c));
        // The metric tags, as Kafka's DefaultQuotaCallback.quotaMetricTags picks them.
        let (user_tag, client_tag) = if has(named(user), named(client_id))
            || has(named(user), default.clone())
        {
            (user, client_id)
        } else if has(named(user), None) {
            (user, "")
        } else if has(default.clone(), named(client_id)) || has(default.clone(), default.clone()) {
            (user, client_id)
        } else if has(default.clone(), None) {
            (user, "")
        } else {
            ("", client_id)
        };
        // The limit for those tags, as its quotaLimit looks it up.
        let u = named(user_tag);
        let c = named(client_tag);
        let limit = if !user_tag.is_empty() && !client_tag.is_empty() {
            self.value(key, &QuotaEntity::new(u.clone(), c.clone()))
                .or_else(|| self.value(key, &QuotaEntity::new(u, default.clone())))
                .or_else(|| self.value(key, &QuotaEntity::new(default.clone(), c)))
                .or_else(|| self.value(key, &QuotaEntity::new(default.clone(), default.clone())))
        } else if !user_tag.is_empty() {
            self.value(key, &QuotaEntity::named(Some(user_tag), None))
                .or_else(|| self.value(key, &QuotaEntity::new(default.clone(), None)))
        } else if !client_tag.is_empty() {
            self.value(key, &QuotaEntity::named(None, Some(client_tag)))
                .or_else(|| self.value(key, &QuotaEntity::new(None, default.clone())))
        } else {
            None
        }?;
        Some(ResolvedQuota {
            user_tag: user_tag.to_string(),
            client_tag: client_tag.to_string(),
            limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(
        store: &mut ClientQuotaStore,
        user: Option<EntityName>,
        client: Option<EntityName>,
        v: f64,
    ) {
        store.apply(&ClientQuotaRecord {
            entity: QuotaEntity::new(user, client),
            key: PRODUCER_BYTE_RATE.into(),
            value: Some(QuotaValue(v)),
        });
    }

    fn name(n: &str) -> Option<EntityName> {
        Some(EntityName::Named(n.into()))
    }

    fn resolved(
        store: &ClientQuotaStore,
        user: &str,
        client: &str,
    ) -> Option<(String, String, f64)> {
        store
            .resolve(PRODUCER_BYTE_RATE, user, client)
            .map(|r| (r.user_tag, r.client_tag, r.limit))
    }

    fn r(u: &str, c: &str, l: f64) -> Option<(String, String, f64)> {
        Some((u.into(), c.into(), l))
    }

    #[test]
    fn resolution_follows_kafkas_order() {
        let d = || Some(EntityName::Default);
        let mut s = ClientQuotaStore::default();
        assert_eq!(resolved(&s, "alice", "app"), None);
        set(&mut s, None, d(), 8.0);
        assert_eq!(resolved(&s, "alice", "app"), r("", "app", 8.0));
        set(&mut s, None, name("app"), 7.0);
        assert_eq!(resolved(&s, "alice", "app"), r("", "app", 7.0));
        assert_eq!(resolved(&s, "alice", "other"), r("", "other", 8.0));
        set(&mut s, d(), None, 6.0);
        assert_eq!(resolved(&s, "alice", "app"), r("alice", "", 6.0));
        set(&mut s, d(), d(), 5.0);
        assert_eq!(resolved(&s, "alice", "app"), r("alice", "app", 5.0));
        set(&mut s, d(), name("app"), 4.0);
        assert_eq!(resolved(&s, "alice", "app"), r("alice", "app", 4.0));
        assert_eq!(resolved(&s, "alice", "other"), r("alice", "other", 5.0));
        set(&mut s, name("alice"), None, 3.0);
        assert_eq!(resolved(&s, "alice", "app"), r("alice", "", 3.0));
        assert_eq!(resolved(&s, "bob", "app"), r("bob", "app", 4.0));
        set(&mut s, name("alice"), d(), 2.0);
        assert_eq!(resolved(&s, "alice", "app"), r("alice", "app", 2.0));
        set(&mut s, name("alice"), name("app"), 1.0);
        assert_eq!(resolved(&s, "alice", "app"), r("alice", "app", 1.0));
        assert_eq!(resolved(&s, "alice", "other"), r("alice", "other", 2.0));
        // Another key is resolved on its own.
        assert_eq!(s.resolve(CONSUMER_BYTE_RATE, "alice", "app"), None);
    }

    #[test]
    fn removing_the_last_key_drops_the_entity_and_snapshots_round_trip() {
        let mut s = ClientQuotaStore::default();
        set(&mut s, name("u"), None, 1024.0);
        set(&mut s, None, Some(EntityName::Default), f64::INFINITY);
        let json = serde_json::to_string(&s).expect("serialize");
        let back: ClientQuotaStore = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, s);
        s.apply(&ClientQuotaRecord {
            entity: QuotaEntity::new(name("u"), None),
            key: PRODUCER_BYTE_RATE.into(),
            value: None,
        });
        assert_eq!(s.iter().count(), 1);
    }
}
