//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): `kafka-configs
//! --entity-type users`. A client sends the salt and the salted password; the broker stores
//! the StoredKey and ServerKey derived from them, as metadata records, never a password.
//! Altering needs ALTER on the cluster, describing DESCRIBE.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;
use super::session::Session;
use crate::broker::Broker;
use crate::meta::acl::AclOperation;
use crate::meta::image::{ApplyOutcome, MetadataRecord, ScramCredential};
use crate::security::sasl::{self, Mechanism, SCRAM_MAX_ITERATIONS, SCRAM_MIN_ITERATIONS};

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

type Failure = (ResponseError, String);

pub fn describe(
    broker: &Broker,
    session: &Session,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let image = broker.image();
    if !session.allowed_on_cluster(&image, AclOperation::Describe) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(code(ResponseError::ClusterAuthorizationFailed))
            .with_error_message(Some(s(
                ResponseError::ClusterAuthorizationFailed.to_string()
            )));
    }
    let info = |user: &str| -> Result<Vec<CredentialInfo>, Failure> {
        let stored = image.scram_credentials.get(user).ok_or((
            ResponseError::ResourceNotFound,
            "Attempt to describe a user credential that does not exist".to_string(),
        ))?;
        Ok(stored
            .iter()
            .filter_map(|(name, c)| {
                let m = Mechanism::parse(name)?;
                Some(
                    CredentialInfo::default()
                        .with_mechanism(m.scram_type()?)
                        .with_iterations(c.iterations),
                )
            })
            .collect())
    };
    let users: Vec<String> = match &req.users {
        Some(users) if !users.is_empty() => users.iter().map(|u| u.name.to_string()).collect(),
        _ => image.scram_credentials.keys().cloned().collect(),
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for u in &users {
        *counts.entry(u.as_str()).or_default() += 1;
    }
    let mut seen = HashSet::new();
    let results = users
        .iter()
        .filter(|u| seen.insert(u.as_str()))
        .map(|user| {
            let r = DescribeUserScramCredentialsResult::default().with_user(s(user.clone()));
            let outcome = if counts[user.as_str()] > 1 {
                Err((
                    ResponseError::DuplicateResource,
                    "Cannot describe SCRAM credentials for the same user twice in a single request"
                        .to_string(),
                ))
            } else {
                info(user)
            };
            match outcome {
                Ok(infos) => r.with_credential_infos(infos),
                Err((e, m)) => r.with_error_code(code(e)).with_error_message(Some(s(m))),
            }
        })
        .collect();
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// One alteration, checked.
enum Change {
    Upsert {
        mechanism: Mechanism,
        credential: ScramCredential,
    },
    Delete {
        mechanism: Mechanism,
    },
}

fn scram_mechanism(code: i8) -> Result<Mechanism, Failure> {
    Mechanism::from_scram_type(code).ok_or((
        ResponseError::UnsupportedSaslMechanism,
        "Unknown SCRAM mechanism".to_string(),
    ))
}

pub async fn alter(
    broker: &Broker,
    session: &Session,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let image = broker.image();
    let authorized = session.allowed_on_cluster(&image, AclOperation::Alter);
    // One result per user, in the order users first appear.
    let mut users: Vec<String> = Vec::new();
    let mut changes: BTreeMap<String, Result<Vec<Change>, Failure>> = BTreeMap::new();
    let mut seen: HashSet<(String, i8)> = HashSet::new();
    let entries = req
        .deletions
        .iter()
        .map(|d| (d.name.to_string(), d.mechanism, None))
        .chain(
            req.upsertions
                .iter()
                .map(|u| (u.name.to_string(), u.mechanism, Some(u))),
        );
    for (user, mechanism_code, upsertion) in entries {
        if !changes.contains_key(&user) {
            users.push(user.clone());
            changes.insert(user.clone(), Ok(Vec::new()));
        }
        let Some(Ok(list)) = changes.get_mut(&user) else {
            continue;
        };
        let change = (|| -> Result<Change, Failure> {
            if user.is_empty() {
                return Err((
                    ResponseError::UnacceptableCredential,
                    "Username must not be empty".into(),
                ));
            }
            if !seen.insert((user.clone(), mechanism_code)) {
                return Err((
                    ResponseError::DuplicateResource,
                    "A user credential cannot be altered twice in the same request".into(),
                ));
            }
            let mechanism = scram_mechanism(mechanism_code)?;
            match upsertion {
                None => {
                    let exists = image
                        .scram_credentials
                        .get(&user)
                        .is_some_and(|m| m.contains_key(mechanism.name()));
                    if !exists {
                        return Err((
                            ResponseError::ResourceNotFound,
                            "Attempt to delete a user credential that does not exist".into(),
                        ));
                    }
                    Ok(Change::Delete { mechanism })
                }
                Some(u) => {
                    if u.iterations < SCRAM_MIN_ITERATIONS {
                        return Err((
                            ResponseError::UnacceptableCredential,
                            format!("Too few iterations (minimum {SCRAM_MIN_ITERATIONS})"),
                        ));
                    }
                    if u.iterations > SCRAM_MAX_ITERATIONS {
                        return Err((
                            ResponseError::UnacceptableCredential,
                            format!("Too many iterations (maximum {SCRAM_MAX_ITERATIONS})"),
                        ));
                    }
                    let c = sasl::credential_from_salted_password(
                        mechanism,
                        &u.salt,
                        &u.salted_password,
                        u.iterations,
                    );
                    Ok(Change::Upsert {
                        mechanism,
                        credential: ScramCredential {
                            salt: c.salt,
                            stored_key: c.stored_key,
                            server_key: c.server_key,
                            iterations: c.iterations,
                        },
                    })
                }
            }
        })();
        match change {
            Ok(c) => list.push(c),
            Err(f) => {
                changes.insert(user.clone(), Err(f));
            }
        }
    }
    let mut results = Vec::with_capacity(users.len());
    for user in users {
        let r = AlterUserScramCredentialsResult::default().with_user(s(user.clone()));
        let outcome = if !authorized {
            Err((
                ResponseError::ClusterAuthorizationFailed,
                ResponseError::ClusterAuthorizationFailed.to_string(),
            ))
        } else {
            match changes.remove(&user) {
                Some(Ok(list)) => store(broker, &user, list).await,
                Some(Err(f)) => Err(f),
                None => Ok(()),
            }
        };
        results.push(match outcome {
            Ok(()) => r,
            Err((e, m)) => r.with_error_code(code(e)).with_error_message(Some(s(m))),
        });
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}

/// Proposes a user's changes, in order.
async fn store(broker: &Broker, user: &str, changes: Vec<Change>) -> Result<(), Failure> {
    for change in changes {
        let record = match change {
            Change::Upsert {
                mechanism,
                credential,
            } => MetadataRecord::UpsertScramCredential {
                user: user.to_string(),
                mechanism: mechanism.name().to_string(),
                credential,
            },
            Change::Delete { mechanism } => MetadataRecord::DeleteScramCredential {
                user: user.to_string(),
                mechanism: mechanism.name().to_string(),
            },
        };
        match broker.meta.propose(record).await {
            Ok(ApplyOutcome::Ok) => {}
            Ok(_) => {
                return Err((
                    ResponseError::ResourceNotFound,
                    "Attempt to delete a user credential that does not exist".into(),
                ))
            }
            Err(e) => return Err((ResponseError::UnknownServerError, e.to_string())),
        }
    }
    tracing::info!(user, "SCRAM credentials altered");
    Ok(())
}
