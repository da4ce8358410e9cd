//! Feature flags (KIP-584, KIP-778, KIP-1022): the features and version ranges this broker
//! supports, the levels finalized in the metadata log, and Kafka's rules for changing them
//! (UpdateFeatures, `kafka-features.sh upgrade|downgrade|disable`).
//!
//! What Gregor supports, and why:
//! - `metadata.version` 21 (3.9-IV0) only. Gregor's metadata log is its own, so a level here
//!   names the Kafka semantics Gregor matches: SCRAM credentials in the metadata log (3.5-IV2),
//!   no leader-epoch bump when only the ISR shrinks (3.6-IV0), ListOffsets v9 for KIP-1005
//!   (3.9-IV0). The 4.0 levels exist for the KIP-848 group coordinator, eligible leader
//!   replicas (KIP-966) and transactions v2, none of which Gregor has, and a lower level would
//!   claim semantics it no longer has (the ISR-shrink epoch bump). One level, so no upgrade
//!   or downgrade of it is possible.
//! - Every other Kafka 4.x feature only at level 0, which Kafka leaves out of the supported
//!   features: `transaction.version` (1 writes flexible `__transaction_state` values, which
//!   Gregor does not; 2 is KIP-890 part 2, not offered), `group.version` (KIP-848),
//!   `kraft.version` (Kafka's dynamic quorum, KIP-853), `eligible.leader.replicas.version`,
//!   `share.version`, `streams.version`.

use std::collections::BTreeMap;

/// Kafka's name of the metadata version feature.
pub const METADATA_VERSION: &str = "metadata.version";

/// The one `metadata.version` level Gregor implements: 3.9-IV0.
pub const METADATA_VERSION_LEVEL: i16 = 21;

/// (feature, min, max) of every feature this broker supports at a level above 0.
pub const SUPPORTED_FEATURES: &[(&str, i16, i16)] = &[(
    METADATA_VERSION,
    METADATA_VERSION_LEVEL,
    METADATA_VERSION_LEVEL,
)];

/// The UpdateFeatures upgrade types (KIP-778).
pub const UPGRADE: i8 = 1;
pub const SAFE_DOWNGRADE: i8 = 2;
pub const UNSAFE_DOWNGRADE: i8 = 3;

/// The supported range of a feature; Kafka's DISABLED range (0, 0) for one not listed.
pub fn supported_range(feature: &str) -> (i16, i16) {
    SUPPORTED_FEATURES
        .iter()
        .find(|(name, _, _)| *name == feature)
        .map(|(_, min, max)| (*min, *max))
        .unwrap_or((0, 0))
}

/// The finalized level of every feature above level 0, `metadata.version` included (it is
/// always finalized: a cluster starts at Gregor's level).
pub fn finalized(stored: &BTreeMap<String, i16>) -> BTreeMap<String, i16> {
    let mut out: BTreeMap<String, i16> = stored
        .iter()
        .filter(|(_, level)| **level > 0)
        .map(|(name, level)| (name.clone(), *level))
        .collect();
    out.entry(METADATA_VERSION.to_string())
        .or_insert(METADATA_VERSION_LEVEL);
    out
}

/// Checks one requested change as Kafka's controller does (FeatureControlManager), in its
/// order. `Err` holds the reason Kafka gives after "Invalid update version {level} for
/// feature {name}." (the error is INVALID_UPDATE_VERSION). `controller` is the node named in
/// "Local controller N ...".
pub fn check_update(
    finalized: &BTreeMap<String, i16>,
    feature: &str,
    level: i16,
    upgrade_type: i8,
    controller: i32,
) -> Result<(), String> {
    if !(UPGRADE..=UNSAFE_DOWNGRADE).contains(&upgrade_type) {
        return Err("The controller does not support the given upgrade type.".into());
    }
    if level < 0 {
        return Err("A feature version cannot be less than 0.".into());
    }
    let (min, max) = supported_range(feature);
    if !(min..=max).contains(&level) {
        return Err(if max == 0 {
            format!("Local controller {controller} does not support this feature.")
        } else {
            format!("Local controller {controller} only supports versions {min}-{max}")
        });
    }
    let current = finalized.get(feature).copied().unwrap_or(0);
    if level < current && upgrade_type == UPGRADE {
        return Err(
            "Can't downgrade the version of this feature without setting the upgrade \
                    type to either safe or unsafe downgrade."
                .into(),
        );
    }
    if level > current && upgrade_type != UPGRADE {
        return Err("Can't downgrade to a newer version.".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fin() -> BTreeMap<String, i16> {
        finalized(&BTreeMap::new())
    }

    #[test]
    fn metadata_version_is_always_finalized() {
        assert_eq!(fin().get(METADATA_VERSION), Some(&METADATA_VERSION_LEVEL));
        let stored = BTreeMap::from([("group.version".to_string(), 0)]);
        assert_eq!(finalized(&stored).len(), 1, "level 0 is not finalized");
    }

    #[test]
    fn kafka_reasons() {
        let f = fin();
        assert_eq!(
            check_update(&f, METADATA_VERSION, 22, UPGRADE, 1).unwrap_err(),
            "Local controller 1 only supports versions 21-21"
        );
        assert_eq!(
            check_update(&f, "transaction.version", 2, UPGRADE, 1).unwrap_err(),
            "Local controller 1 does not support this feature."
        );
        assert_eq!(
            check_update(&f, "foo.version", 1, UPGRADE, 3).unwrap_err(),
            "Local controller 3 does not support this feature."
        );
        assert!(check_update(&f, "group.version", -1, SAFE_DOWNGRADE, 1)
            .unwrap_err()
            .contains("less than 0"));
        assert!(check_update(&f, "group.version", 0, 4, 1)
            .unwrap_err()
            .contains("upgrade type"));
        // Disabling a feature that is at 0, and re-finalizing the current level, are allowed.
        assert!(check_update(&f, "group.version", 0, SAFE_DOWNGRADE, 1).is_ok());
        assert!(check_update(&f, METADATA_VERSION, 21, UPGRADE, 1).is_ok());
    }
}
