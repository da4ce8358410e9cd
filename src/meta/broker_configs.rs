//! Dynamic broker configs as the metadata log holds them (Kafka's KIP-226 configs, set with
//! `kafka-configs --entity-type brokers`): the cluster-wide default (`--entity-default`, resource
//! name "") and per-broker values (`--entity-name <id>`). Values are stored as given, already
//! validated by the proposer; `config::dynamic` layers them over the static settings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every dynamic broker config of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicBrokerConfigs {
    /// The cluster-wide default (DYNAMIC_DEFAULT_BROKER_CONFIG), for every broker.
    pub cluster_default: BTreeMap<String, String>,
    /// Per-broker values (DYNAMIC_BROKER_CONFIG), by broker id; they win over the default.
    pub brokers: BTreeMap<i32, BTreeMap<String, String>>,
}

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

/// A config change as the metadata log records it: each key set (`Some`) or removed (`None`).
pub type ConfigChanges = BTreeMap<String, Option<String>>;

/// Applies `changes` to one resource's configs (brokers and groups alike).
pub fn apply_changes(configs: &mut BTreeMap<String, String>, changes: &ConfigChanges) {
    for (key, value) in changes {
        match value {
            Some(v) => {
                configs.insert(key.clone(), v.clone());
            }
            None => {
                configs.remove(key);
            }
        }
    }
}

/// What takes a resource's configs from `current` to `new`: the keys set anew or changed, and
/// the keys removed.
pub fn changes_between(
    current: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> ConfigChanges {
    let mut changes: ConfigChanges = new
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    for k in current.keys().filter(|k| !new.contains_key(*k)) {
        changes.insert(k.clone(), None);
    }
    changes
}

impl DynamicBrokerConfigs {
    /// The configs of one resource: `None` is the cluster-wide default.
    pub fn resource(&self, broker_id: Option<i32>) -> &BTreeMap<String, String> {
        match broker_id {
            None => &self.cluster_default,
            Some(id) => self.brokers.get(&id).unwrap_or(&EMPTY),
        }
    }

    /// Sets (`Some`) or removes (`None`) keys of one resource.
    pub fn alter(&mut self, broker_id: Option<i32>, changes: &BTreeMap<String, Option<String>>) {
        let configs = match broker_id {
            None => &mut self.cluster_default,
            Some(id) => self.brokers.entry(id).or_default(),
        };
        apply_changes(configs, changes);
        self.brokers.retain(|_, c| !c.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alter_sets_and_removes_per_resource() {
        let mut d = DynamicBrokerConfigs::default();
        let set = |k: &str, v: Option<&str>| BTreeMap::from([(k.to_string(), v.map(String::from))]);
        d.alter(None, &set("log.retention.ms", Some("1000")));
        d.alter(Some(2), &set("message.max.bytes", Some("500")));
        assert_eq!(
            d.resource(None).get("log.retention.ms").map(String::as_str),
            Some("1000")
        );
        assert_eq!(d.resource(Some(2)).len(), 1);
        assert!(d.resource(Some(1)).is_empty());
        d.alter(Some(2), &set("message.max.bytes", None));
        assert!(d.brokers.is_empty(), "an emptied broker entry is dropped");
        d.alter(None, &set("nothing.here", None));
        assert_eq!(d.cluster_default.len(), 1);
    }

    #[test]
    fn records_apply_and_old_snapshots_read() {
        use crate::meta::image::{ApplyOutcome, MetadataImage, MetadataRecord};
        let mut image = MetadataImage::default();
        let record = MetadataRecord::AlterBrokerConfigs {
            broker_id: Some(1),
            changes: BTreeMap::from([("message.max.bytes".to_string(), Some("10".to_string()))]),
        };
        assert_eq!(image.apply(&record), ApplyOutcome::Ok);
        let encoded = serde_json::to_string(&record).expect("encode");
        let decoded: MetadataRecord = serde_json::from_str(&encoded).expect("decode");
        assert_eq!(decoded, record);
        let mut json = serde_json::to_value(&image).expect("image");
        let back: MetadataImage = serde_json::from_value(json.clone()).expect("image back");
        assert_eq!(back.broker_configs, image.broker_configs);
        // A snapshot written before dynamic broker configs existed.
        json.as_object_mut()
            .expect("object")
            .remove("broker_configs");
        let old: MetadataImage = serde_json::from_value(json).expect("old snapshot");
        assert_eq!(*old.broker_configs, DynamicBrokerConfigs::default());
    }
}
