//! The session a request arrives in: who the connection is (its principal, from TLS or SASL),
//! where from, on which listener, and its authorization decisions.
//!
//! Decisions follow the ACL bindings of the metadata image (`meta::acl`); each connection caches
//! them per (resource, operation) and drops the cache when the image's ACLs change, so that an
//! authorized produce costs a hash lookup, not an ACL scan. With the authorizer off every
//! operation is allowed and nothing is cached.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::meta::acl::{AclOperation, Requester, ResourceType, CLUSTER_NAME};
use crate::meta::image::MetadataImage;
use crate::security::principal::KafkaPrincipal;

/// The built-in authorizer's settings (`authorizer.class.name` set to Kafka's
/// StandardAuthorizer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerSettings {
    /// `super.users`: `Type:name` principals allowed everything.
    pub super_users: HashSet<String>,
    /// `allow.everyone.if.no.acl.found`.
    pub allow_if_no_acl: bool,
}

/// Decisions cached per connection: bounded, and dropped when the ACLs change.
const CACHED_DECISIONS: usize = 4096;

#[derive(Default)]
struct DecisionCache {
    acl_version: u64,
    decisions: HashMap<(ResourceType, String, AclOperation), bool>,
}

/// Where a connection is in SASL authentication (KIP-152, KIP-368).
pub enum Authentication {
    /// No SASL on this listener, or authenticated; `expires` is when the session must
    /// re-authenticate (`connections.max.reauth.ms`).
    Done { expires: Option<std::time::Instant> },
    /// A SASL listener's connection before SaslHandshake.
    AwaitingHandshake,
    /// After SaslHandshake: SaslAuthenticate exchanges tokens with the mechanism.
    InProgress {
        server: crate::security::sasl::SaslServer,
        /// Re-authenticating an authenticated session: the principal may not change.
        reauthenticating: bool,
        /// After a SaslHandshake v0 the tokens come as bare size-prefixed frames, not as
        /// SaslAuthenticate requests.
        raw_tokens: bool,
    },
}

impl Authentication {
    /// Whether the next frame is a bare SASL token (after a SaslHandshake v0).
    pub fn awaits_raw_token(&self) -> bool {
        matches!(
            self,
            Authentication::InProgress {
                raw_tokens: true,
                ..
            }
        )
    }

    /// Whether requests other than ApiVersions and the SASL ones may be served now.
    pub fn authenticated(&self) -> bool {
        matches!(
            self,
            Authentication::Done { .. }
                | Authentication::InProgress {
                    reauthenticating: true,
                    ..
                }
        )
    }
}

pub struct Session {
    /// SASL state; `Done` from the start on listeners without SASL.
    pub authentication: Authentication,
    /// The listener's SASL setup, on SASL listeners.
    pub sasl: Option<Arc<super::sasl::SaslListener>>,
    principal: KafkaPrincipal,
    /// `Type:name`, as bindings name principals.
    principal_text: String,
    /// The client's IP address, as bindings name hosts.
    pub client_host: String,
    /// The listener the connection came in on: Metadata answers with its endpoints.
    pub listener: Arc<str>,
    authorizer: Option<Arc<AuthorizerSettings>>,
    /// Whether the principal is a super user (or the authorizer is off).
    everything_allowed: bool,
    cache: Mutex<DecisionCache>,
    /// The client quotas that apply to this connection, resolved once per quota change.
    pub quotas: crate::quota::ConnectionQuotas,
}

impl Session {
    pub fn new(
        principal: KafkaPrincipal,
        client_host: String,
        listener: Arc<str>,
        authorizer: Option<Arc<AuthorizerSettings>>,
    ) -> Self {
        let principal_text = principal.to_string();
        let everything_allowed = authorizer
            .as_ref()
            .is_none_or(|a| a.super_users.contains(&principal_text));
        Self {
            authentication: Authentication::Done { expires: None },
            sasl: None,
            principal,
            principal_text,
            client_host,
            listener,
            authorizer,
            everything_allowed,
            cache: Mutex::new(DecisionCache::default()),
            quotas: crate::quota::ConnectionQuotas::default(),
        }
    }

    /// A session on a SASL listener: nothing but ApiVersions and the SASL requests until it
    /// authenticates.
    pub fn with_sasl(mut self, sasl: Arc<super::sasl::SaslListener>) -> Self {
        self.sasl = Some(sasl);
        self.authentication = Authentication::AwaitingHandshake;
        self
    }

    /// The client quotas of this connection's principal with `client_id` (`None`: no quota
    /// applies), from the connection's cache.
    pub fn client_quotas(
        &mut self,
        managers: &crate::quota::QuotaManagers,
        client_id: Option<&str>,
    ) -> Option<Arc<crate::quota::ClientQuotas>> {
        managers.for_client(&mut self.quotas, &self.principal.name, client_id)
    }

    pub fn principal(&self) -> &KafkaPrincipal {
        &self.principal
    }

    /// Changes the principal (SASL authentication); cached decisions are dropped.
    pub fn set_principal(&mut self, principal: KafkaPrincipal) {
        self.principal_text = principal.to_string();
        self.everything_allowed = self
            .authorizer
            .as_ref()
            .is_none_or(|a| a.super_users.contains(&self.principal_text));
        self.principal = principal;
        *self.cache.get_mut() = DecisionCache::default();
    }

    /// Whether this session may do `operation` on the resource.
    pub fn allowed(
        &self,
        image: &MetadataImage,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if self.everything_allowed {
            return true;
        }
        let Some(settings) = &self.authorizer else {
            return true;
        };
        let mut cache = self.cache.lock();
        if cache.acl_version != image.acl_version || cache.decisions.len() >= CACHED_DECISIONS {
            cache.decisions.clear();
            cache.acl_version = image.acl_version;
        }
        let key = (resource_type, name.to_string(), operation);
        if let Some(decision) = cache.decisions.get(&key) {
            return *decision;
        }
        let who = Requester {
            principal: &self.principal_text,
            host: &self.client_host,
        };
        let decision = image.acls.authorize(
            &who,
            operation,
            resource_type,
            name,
            settings.allow_if_no_acl,
        );
        cache.decisions.insert(key, decision);
        decision
    }

    /// Whether this session may do `operation` on some resource of the type.
    pub fn allowed_on_any(
        &self,
        image: &MetadataImage,
        operation: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        if self.everything_allowed {
            return true;
        }
        let Some(settings) = &self.authorizer else {
            return true;
        };
        let who = Requester {
            principal: &self.principal_text,
            host: &self.client_host,
        };
        image
            .acls
            .authorize_any(&who, operation, resource_type, settings.allow_if_no_acl)
    }

    /// Whether this session may do `operation` on the cluster.
    pub fn allowed_on_cluster(&self, image: &MetadataImage, operation: AclOperation) -> bool {
        self.allowed(image, operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Kafka's `authorizedOperations` bit set of `operations` on a resource (bit n for
    /// operation code n).
    pub fn authorized_operations(
        &self,
        image: &MetadataImage,
        resource_type: ResourceType,
        name: &str,
        operations: &[AclOperation],
    ) -> i32 {
        operations
            .iter()
            .filter(|op| self.allowed(image, **op, resource_type, name))
            .fold(0, |bits, op| bits | (1 << op.code()))
    }
}

/// What a topic supports, for `topic_authorized_operations`.
pub const TOPIC_OPERATIONS: &[AclOperation] = &[
    AclOperation::Read,
    AclOperation::Write,
    AclOperation::Create,
    AclOperation::Delete,
    AclOperation::Alter,
    AclOperation::Describe,
    AclOperation::DescribeConfigs,
    AclOperation::AlterConfigs,
];

/// What a group supports, for `authorized_operations`.
pub const GROUP_OPERATIONS: &[AclOperation] = &[
    AclOperation::Read,
    AclOperation::Delete,
    AclOperation::Describe,
];

/// What the cluster supports, for `cluster_authorized_operations`.
pub const CLUSTER_OPERATIONS: &[AclOperation] = &[
    AclOperation::Create,
    AclOperation::Alter,
    AclOperation::Describe,
    AclOperation::ClusterAction,
    AclOperation::DescribeConfigs,
    AclOperation::AlterConfigs,
    AclOperation::IdempotentWrite,
    AclOperation::CreateTokens,
    AclOperation::DescribeTokens,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::acl::{AclBinding, PatternType, PermissionType};
    use crate::meta::image::MetadataRecord;

    fn session(principal: &str, authorizer: Option<AuthorizerSettings>) -> Session {
        Session::new(
            KafkaPrincipal::parse(principal).expect("principal"),
            "127.0.0.1".into(),
            Arc::from("PLAINTEXT"),
            authorizer.map(Arc::new),
        )
    }

    #[test]
    fn decisions_follow_acl_changes_and_super_users_skip_them() {
        let mut image = MetadataImage::default();
        let settings = AuthorizerSettings {
            super_users: ["User:admin".to_string()].into_iter().collect(),
            allow_if_no_acl: false,
        };
        let alice = session("User:alice", Some(settings.clone()));
        let admin = session("User:admin", Some(settings));
        let open = session("User:alice", None);
        let t = ResourceType::Topic;
        assert!(!alice.allowed(&image, AclOperation::Write, t, "chat"));
        assert!(admin.allowed(&image, AclOperation::Write, t, "chat"));
        assert!(open.allowed(&image, AclOperation::Write, t, "chat"));
        image.apply(&MetadataRecord::CreateAcls(vec![AclBinding {
            resource_type: t,
            resource_name: "chat".into(),
            pattern_type: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Write,
            permission: PermissionType::Allow,
        }]));
        // The cached "no" is dropped with the ACL version.
        assert!(alice.allowed(&image, AclOperation::Write, t, "chat"));
        assert_eq!(
            alice.authorized_operations(&image, t, "chat", TOPIC_OPERATIONS),
            (1 << 4) | (1 << 8)
        );
    }
}
