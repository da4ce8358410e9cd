//! ACL bindings as the metadata log holds them, and Kafka's StandardAuthorizer semantics over
//! them: who may do what to which resource. Bindings are records (CreateAcls adds,
//! DeleteAcls removes by filter), so every broker enforces the same set.
//!
//! Deciding: super users may do anything. Otherwise the bindings that match the resource (a
//! literal binding with its name or `*`, a prefixed binding whose name starts it) are checked:
//! a matching DENY wins; else a matching ALLOW allows (READ, WRITE, DELETE and ALTER imply
//! DESCRIBE, ALTER_CONFIGS implies DESCRIBE_CONFIGS); else it is denied. When no binding
//! matches the resource at all, `allow.everyone.if.no.acl.found` decides.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Kafka's resource type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceType {
    Unknown = 0,
    Any = 1,
    Topic = 2,
    Group = 3,
    Cluster = 4,
    TransactionalId = 5,
    DelegationToken = 6,
    User = 7,
}

/// Kafka's pattern type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PatternType {
    Unknown = 0,
    Any = 1,
    Match = 2,
    Literal = 3,
    Prefixed = 4,
}

/// Kafka's operation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AclOperation {
    Unknown = 0,
    Any = 1,
    All = 2,
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
    CreateTokens = 13,
    DescribeTokens = 14,
    TwoPhaseCommit = 15,
}

/// Kafka's permission type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PermissionType {
    Unknown = 0,
    Any = 1,
    Deny = 2,
    Allow = 3,
}

macro_rules! from_code {
    ($t:ty, $($v:ident = $c:literal),*) => {
        impl $t {
            pub fn from_code(code: i8) -> Self {
                match code { $($c => Self::$v,)* _ => Self::Unknown }
            }
            pub fn code(self) -> i8 { self as i8 }
        }
    };
}

from_code!(
    ResourceType,
    Any = 1,
    Topic = 2,
    Group = 3,
    Cluster = 4,
    TransactionalId = 5,
    DelegationToken = 6,
    User = 7
);
from_code!(PatternType, Any = 1, Match = 2, Literal = 3, Prefixed = 4);
from_code!(
    AclOperation,
    Any = 1,
    All = 2,
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
    CreateTokens = 13,
    DescribeTokens = 14,
    TwoPhaseCommit = 15
);
from_code!(PermissionType, Any = 1, Deny = 2, Allow = 3);

/// The name of the one cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The literal resource name that stands for every resource of its type.
pub const WILDCARD: &str = "*";

/// One ACL binding: a pattern of resources, and who may (or may not) do what to them from
/// where.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    /// `Type:name`, or `User:*` for every user.
    pub principal: String,
    /// An IP address, or `*`.
    pub host: String,
    pub operation: AclOperation,
    pub permission: PermissionType,
}

/// A filter over bindings (DescribeAcls, DeleteAcls): `None` and the ANY codes match all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclBindingFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    pub pattern_type: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: PermissionType,
}

impl AclBinding {
    /// Kafka's checks for a new binding (AclControlManager.validateNewAcl); the message is
    /// the INVALID_REQUEST error's.
    pub fn validate(&self) -> Result<(), String> {
        if matches!(
            self.resource_type,
            ResourceType::Any | ResourceType::Unknown
        ) {
            return Err("Invalid resourceType".into());
        }
        if !matches!(
            self.pattern_type,
            PatternType::Literal | PatternType::Prefixed
        ) {
            return Err("Invalid patternType".into());
        }
        if matches!(self.operation, AclOperation::Any | AclOperation::Unknown) {
            return Err("Invalid operation".into());
        }
        if matches!(
            self.permission,
            PermissionType::Any | PermissionType::Unknown
        ) {
            return Err("Invalid permissionType".into());
        }
        if self.resource_name.is_empty() {
            return Err("Resource name should not be empty".into());
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return Err(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ));
        }
        if self.host.is_empty() {
            return Err("Invalid host".into());
        }
        match self.principal.split_once(':') {
            Some((t, n)) if !t.is_empty() && !n.is_empty() => Ok(()),
            _ => Err(format!(
                "Could not parse principal from `{}`",
                self.principal
            )),
        }
    }

    /// Whether this binding applies to the resource `(resource_type, name)`.
    fn covers(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => {
                    self.resource_name == name || self.resource_name == WILDCARD
                }
                PatternType::Prefixed => name.starts_with(&self.resource_name),
                _ => false,
            }
    }
}

impl AclBindingFilter {
    /// Kafka's checks for a filter: MATCH needs a resource name only when given; UNKNOWN codes
    /// are refused.
    pub fn validate(&self) -> Result<(), String> {
        if self.resource_type == ResourceType::Unknown
            || self.pattern_type == PatternType::Unknown
            || self.operation == AclOperation::Unknown
            || self.permission == PermissionType::Unknown
        {
            return Err("Invalid filter: unknown value".into());
        }
        Ok(())
    }

    /// Whether `b` matches (AclBindingFilter.matches).
    pub fn matches(&self, b: &AclBinding) -> bool {
        let resource =
            self.resource_type == ResourceType::Any || self.resource_type == b.resource_type;
        let pattern = match (self.pattern_type, &self.resource_name) {
            (PatternType::Any, None) => true,
            (PatternType::Any, Some(n)) => b.resource_name == *n,
            (PatternType::Match, None) => true,
            (PatternType::Match, Some(n)) => match b.pattern_type {
                PatternType::Literal => b.resource_name == *n || b.resource_name == WILDCARD,
                PatternType::Prefixed => n.starts_with(&b.resource_name),
                _ => false,
            },
            (t, name) => b.pattern_type == t && name.as_ref().is_none_or(|n| b.resource_name == *n),
        };
        resource
            && pattern
            && self.principal.as_ref().is_none_or(|p| b.principal == *p)
            && self.host.as_ref().is_none_or(|h| b.host == *h)
            && (self.operation == AclOperation::Any || self.operation == b.operation)
            && (self.permission == PermissionType::Any || self.permission == b.permission)
    }
}

/// Every ACL binding, indexed by resource type, pattern type and name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclStore {
    bindings: BTreeMap<(ResourceType, PatternType, String), Vec<AclBinding>>,
}

/// Who is asking, for a decision.
pub struct Requester<'a> {
    /// `Type:name`.
    pub principal: &'a str,
    pub host: &'a str,
}

impl AclStore {
    pub fn len(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Adds a binding (no-op when present). Returns whether it was new.
    pub fn add(&mut self, b: AclBinding) -> bool {
        let list = self
            .bindings
            .entry((b.resource_type, b.pattern_type, b.resource_name.clone()))
            .or_default();
        if list.contains(&b) {
            return false;
        }
        list.push(b);
        true
    }

    /// Removes and returns the bindings `filter` matches.
    pub fn remove_matching(&mut self, filter: &AclBindingFilter) -> Vec<AclBinding> {
        let mut removed = Vec::new();
        for list in self.bindings.values_mut() {
            list.retain(|b| {
                let hit = filter.matches(b);
                if hit {
                    removed.push(b.clone());
                }
                !hit
            });
        }
        self.bindings.retain(|_, list| !list.is_empty());
        removed
    }

    /// The bindings `filter` matches.
    pub fn matching(&self, filter: &AclBindingFilter) -> Vec<AclBinding> {
        self.bindings
            .values()
            .flatten()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect()
    }

    /// The bindings that apply to the resource: literal with its name or `*`, and prefixed
    /// whose name starts it.
    fn covering<'a>(
        &'a self,
        resource_type: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a AclBinding> + 'a {
        let literal = [name, WILDCARD].into_iter().flat_map(move |n| {
            self.bindings
                .get(&(resource_type, PatternType::Literal, n.to_string()))
                .into_iter()
                .flatten()
        });
        let prefixed = (0..=name.len())
            .filter(move |i| name.is_char_boundary(*i))
            .flat_map(move |i| {
                self.bindings
                    .get(&(resource_type, PatternType::Prefixed, name[..i].to_string()))
                    .into_iter()
                    .flatten()
            });
        literal
            .chain(prefixed)
            .filter(move |b| b.covers(resource_type, name))
    }

    /// StandardAuthorizer's decision for an operation on a resource, for a principal that is
    /// not a super user.
    pub fn authorize(
        &self,
        who: &Requester<'_>,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
        allow_if_no_acl: bool,
    ) -> bool {
        let principal_type = who.principal.split(':').next().unwrap_or("User");
        let wildcard_principal = format!("{principal_type}:*");
        let mut any = false;
        let mut allowed = false;
        for b in self.covering(resource_type, name) {
            any = true;
            let principal_ok = b.principal == who.principal || b.principal == wildcard_principal;
            let host_ok = b.host == WILDCARD || b.host == who.host;
            if !principal_ok || !host_ok {
                continue;
            }
            match b.permission {
                PermissionType::Deny
                    if b.operation == operation || b.operation == AclOperation::All =>
                {
                    return false;
                }
                PermissionType::Allow if implies(b.operation, operation) => allowed = true,
                _ => {}
            }
        }
        allowed || (!any && allow_if_no_acl)
    }
}

impl AclStore {
    /// Whether the principal may do `operation` on some resource of the type (Kafka's
    /// `authorizeByResourceType`, for InitProducerId's "WRITE on any topic"): an ALLOW of it
    /// exists and no DENY of it covers every resource (`*`).
    pub fn authorize_any(
        &self,
        who: &Requester<'_>,
        operation: AclOperation,
        resource_type: ResourceType,
        allow_if_no_acl: bool,
    ) -> bool {
        let principal_type = who.principal.split(':').next().unwrap_or("User");
        let wildcard_principal = format!("{principal_type}:*");
        let mut any = false;
        let mut allowed = false;
        for b in self.bindings.values().flatten() {
            if b.resource_type != resource_type {
                continue;
            }
            any = true;
            let applies = (b.principal == who.principal || b.principal == wildcard_principal)
                && (b.host == WILDCARD || b.host == who.host)
                && (b.operation == operation || b.operation == AclOperation::All);
            if !applies {
                continue;
            }
            match b.permission {
                PermissionType::Deny
                    if b.pattern_type == PatternType::Literal && b.resource_name == WILDCARD =>
                {
                    return false;
                }
                PermissionType::Allow => allowed = true,
                _ => {}
            }
        }
        allowed || (!any && allow_if_no_acl)
    }
}

/// Whether an ALLOW for `granted` allows `wanted`.
fn implies(granted: AclOperation, wanted: AclOperation) -> bool {
    use AclOperation::*;
    granted == wanted
        || granted == All
        || (wanted == Describe && matches!(granted, Read | Write | Delete | Alter))
        || (wanted == DescribeConfigs && granted == AlterConfigs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: AclOperation,
        perm: PermissionType,
    ) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    fn alice() -> Requester<'static> {
        Requester {
            principal: "User:alice",
            host: "10.0.0.1",
        }
    }

    #[test]
    fn deny_wins_prefixes_match_and_describe_is_implied() {
        use AclOperation::*;
        use PatternType::*;
        use PermissionType::*;
        let mut acls = AclStore::default();
        let t = ResourceType::Topic;
        assert!(!acls.authorize(&alice(), Read, t, "chat", false));
        assert!(acls.authorize(&alice(), Read, t, "chat", true));
        acls.add(binding("chat", Literal, "User:alice", Write, Allow));
        assert!(acls.authorize(&alice(), Write, t, "chat", false));
        assert!(
            acls.authorize(&alice(), Describe, t, "chat", false),
            "WRITE implies DESCRIBE"
        );
        assert!(
            !acls.authorize(&alice(), Read, t, "chat", true),
            "ACLs exist: no default"
        );
        acls.add(binding("ch", Prefixed, "User:*", Read, Allow));
        assert!(acls.authorize(&alice(), Read, t, "chat", false));
        assert!(acls.authorize(&alice(), Read, t, "cheese", false));
        assert!(!acls.authorize(&alice(), Read, t, "other", false));
        acls.add(binding("*", Literal, "User:alice", Read, Deny));
        assert!(
            !acls.authorize(&alice(), Read, t, "chat", false),
            "DENY wins"
        );
        assert!(acls.authorize(&alice(), Write, t, "chat", false));
        assert_eq!(acls.len(), 3);
        let removed = acls.remove_matching(&AclBindingFilter {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern_type: PatternType::Any,
            principal: Some("User:alice".into()),
            host: None,
            operation: AclOperation::Any,
            permission: PermissionType::Deny,
        });
        assert_eq!(removed.len(), 1);
        assert!(acls.authorize(&alice(), Read, t, "chat", false));
    }

    #[test]
    fn filters_match_as_kafka_does() {
        use PatternType::*;
        let lit = binding(
            "chat",
            Literal,
            "User:a",
            AclOperation::Read,
            PermissionType::Allow,
        );
        let pre = binding(
            "ch",
            Prefixed,
            "User:a",
            AclOperation::Read,
            PermissionType::Allow,
        );
        let f = |pattern, name: Option<&str>| AclBindingFilter {
            resource_type: ResourceType::Topic,
            resource_name: name.map(String::from),
            pattern_type: pattern,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: PermissionType::Any,
        };
        assert!(f(Match, Some("chat")).matches(&lit) && f(Match, Some("chat")).matches(&pre));
        assert!(f(Literal, Some("chat")).matches(&lit) && !f(Literal, Some("chat")).matches(&pre));
        assert!(f(Prefixed, None).matches(&pre) && !f(Prefixed, None).matches(&lit));
        assert!(f(Any, Some("ch")).matches(&pre) && !f(Any, Some("ch")).matches(&lit));
        let mut bad = lit.clone();
        bad.resource_type = ResourceType::Cluster;
        assert!(bad.validate().is_err());
        bad.resource_name = CLUSTER_NAME.into();
        assert!(bad.validate().is_ok());
        bad.principal = "alice".into();
        assert!(bad.validate().is_err());
    }
}
