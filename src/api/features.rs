//! Features on the wire: the supported and finalized features of ApiVersions v3+ (what
//! `kafka-features.sh describe` and `Admin.describeFeatures` read), and UpdateFeatures
//! (`kafka-features.sh upgrade|downgrade|disable`), stored as a metadata record. The rules
//! and the levels Gregor supports are in `meta::features`.

use std::collections::BTreeMap;

use kafka_protocol::messages::api_versions_response::{FinalizedFeatureKey, SupportedFeatureKey};
use kafka_protocol::messages::update_features_response::UpdatableFeatureResult;
use kafka_protocol::messages::{UpdateFeaturesRequest, UpdateFeaturesResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;
use super::session::Session;
use crate::broker::Broker;
use crate::meta::acl::AclOperation;
use crate::meta::features::{self, SUPPORTED_FEATURES, UPGRADE};
use crate::meta::image::{MetadataImage, MetadataRecord};

/// The features an ApiVersions response of `version` carries: supported ranges, finalized
/// levels and their epoch (the image's position in the metadata log, as Kafka's is the
/// metadata offset). As Kafka does, a feature whose minimum is 0 is left out below v4
/// (KAFKA-17492: older clients cannot read a 0 minimum), and a level-0 feature is never
/// listed as finalized.
pub fn api_versions_features(
    image: &MetadataImage,
    version: i16,
) -> (Vec<SupportedFeatureKey>, Vec<FinalizedFeatureKey>, i64) {
    let supported = SUPPORTED_FEATURES
        .iter()
        .filter(|(_, min, _)| version >= 4 || *min != 0)
        .map(|(name, min, max)| {
            SupportedFeatureKey::default()
                .with_name(StrBytes::from_static_str(name))
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    let finalized = features::finalized(&image.features)
        .into_iter()
        .map(|(name, level)| {
            FinalizedFeatureKey::default()
                .with_name(StrBytes::from_string(name))
                .with_min_version_level(level)
                .with_max_version_level(level)
        })
        .collect();
    let epoch = i64::try_from(image.version).unwrap_or(i64::MAX);
    (supported, finalized, epoch)
}

/// UpdateFeatures, as Kafka's controller answers it: ALTER on the cluster, every update
/// checked in order and the first failure fails them all (INVALID_UPDATE_VERSION, the message
/// naming the feature), `validate_only` (v1+, `--dry-run`) stops before the record. Per-feature
/// results only below v2.
pub async fn update(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: UpdateFeaturesRequest,
) -> UpdateFeaturesResponse {
    let names: Vec<StrBytes> = req
        .feature_updates
        .iter()
        .map(|u| u.feature.clone())
        .collect();
    let failed = |error: ResponseError, message: String| {
        UpdateFeaturesResponse::default()
            .with_error_code(code(error))
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    let image = broker.image();
    if !session.allowed_on_cluster(&image, AclOperation::Alter) {
        return failed(
            ResponseError::ClusterAuthorizationFailed,
            "Cluster authorization failed.".into(),
        );
    }
    let finalized = features::finalized(&image.features);
    let controller = broker.controller_id();
    let mut levels = BTreeMap::new();
    for u in &req.feature_updates {
        // v0's allow_downgrade is ignored, as Kafka 4.3 does: a v0 request only upgrades.
        let upgrade_type = if version == 0 {
            UPGRADE
        } else {
            u.upgrade_type
        };
        let name = u.feature.to_string();
        if let Err(reason) = features::check_update(
            &finalized,
            &name,
            u.max_version_level,
            upgrade_type,
            controller,
        ) {
            return failed(
                ResponseError::InvalidUpdateVersion,
                format!(
                    "The update failed for all features since the following feature had an \
                     error: Invalid update version {} for feature {name}. {reason}",
                    u.max_version_level
                ),
            );
        }
        levels.insert(name, u.max_version_level);
    }
    let dry_run = version >= 1 && req.validate_only;
    if !dry_run && !levels.is_empty() {
        if let Err(e) = broker
            .meta
            .propose(MetadataRecord::FeatureLevels(levels.clone()))
            .await
        {
            tracing::warn!(error = %e, "finalizing feature levels failed");
            return failed(ResponseError::RequestTimedOut, e.to_string());
        }
        tracing::info!(?levels, "feature levels finalized");
    }
    let mut resp = UpdateFeaturesResponse::default().with_error_message(None);
    if version <= 1 {
        resp.results = names
            .into_iter()
            .map(|feature| {
                // Kafka fills in the message of Errors.NONE here.
                UpdatableFeatureResult::default()
                    .with_feature(feature)
                    .with_error_message(Some(StrBytes::from_static_str("NONE")))
            })
            .collect();
    }
    resp
}
