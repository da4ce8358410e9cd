//! ApiVersions: which APIs and versions Gregor serves (KIP-35, KIP-511), and from v3 the
//! supported and finalized features (KIP-584, see `features`).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use super::{code, SUPPORTED_APIS};
use crate::meta::image::MetadataImage;

/// The advertised ranges.
pub fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

/// Kafka's rule for client software names and versions (v3+).
fn valid_software_field(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.')
}

/// The features (tagged fields of v3+) go to every client, as Kafka sends them. An earlier
/// note here held that librdkafka before 2.2 mis-skips tagged fields in this response; it
/// does not: kcat 2.0.2 (librdkafka 2.0.2) reads Kafka 4.3.1's v3 answer, which carries
/// finalized features, and Gregor's (proto-tests/test_features.py runs kcat against both).
pub fn handle(
    image: &MetadataImage,
    version: i16,
    req: &ApiVersionsRequest,
) -> ApiVersionsResponse {
    if version >= 3
        && !(valid_software_field(&req.client_software_name)
            && valid_software_field(&req.client_software_version))
    {
        return ApiVersionsResponse::default().with_error_code(code(ResponseError::InvalidRequest));
    }
    let resp = ApiVersionsResponse::default().with_api_keys(api_keys());
    if version < 3 {
        return resp;
    }
    let (supported, finalized, epoch) = super::features::api_versions_features(image, version);
    resp.with_supported_features(supported)
        .with_finalized_features(finalized)
        .with_finalized_features_epoch(epoch)
}

/// The KIP-511 answer to an ApiVersions version we do not know: a v0-layout response with
/// UNSUPPORTED_VERSION and our ranges, so the client can retry with a version we support.
pub fn unsupported_version_response() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(code(ResponseError::UnsupportedVersion))
        .with_api_keys(api_keys())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_names() {
        assert!(valid_software_field("librdkafka"));
        assert!(valid_software_field("apache-kafka-java"));
        assert!(valid_software_field("2.12.1"));
        assert!(!valid_software_field(""));
        assert!(!valid_software_field("-bad"));
        assert!(!valid_software_field("bad name"));
    }
}
