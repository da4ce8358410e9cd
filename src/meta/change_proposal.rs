//! Proposing a batch of partition changes planned from the current image, as ElectLeaders and
//! AlterPartitionReassignments do: every planned change of a request goes in one proposal, and a
//! change refused because its partition moved on meanwhile (its expected partition epoch is
//! stale) is planned again from the newer image, up to `ATTEMPTS` times. Results come back in
//! request order, each in the caller's own error type.

use super::image::{ApplyOutcome, MetadataImage, MetadataRecord, PartitionChangeRecord};
use super::MetadataQuorum;

/// How many times a partition changed concurrently is planned again.
const ATTEMPTS: usize = 3;

/// The failures the proposal itself reports, in the caller's error type.
pub struct ProposalErrors<E> {
    /// The quorum did not take the proposal (no controller, not the leader, shut down).
    pub not_controller: fn(String) -> E,
    /// The topic was deleted between planning and applying.
    pub topic_deleted: E,
    /// The partition was still changing concurrently after the last attempt.
    pub kept_changing: E,
}

/// Plans each request with `plan` (`Ok(None)`: nothing to change, a success) and proposes the
/// planned changes together, again for those that conflicted. One result per request.
pub async fn propose_changes<R, E: Clone>(
    meta: &MetadataQuorum,
    requests: &[R],
    mut plan: impl FnMut(&MetadataImage, &R) -> Result<Option<PartitionChangeRecord>, E>,
    errors: ProposalErrors<E>,
) -> Vec<Result<(), E>> {
    let mut results: Vec<Option<Result<(), E>>> = vec![None; requests.len()];
    for attempt in 0..ATTEMPTS {
        let image = meta.image();
        let mut planned: Vec<(usize, PartitionChangeRecord)> = Vec::new();
        for (i, req) in requests.iter().enumerate() {
            if results[i].is_some() {
                continue;
            }
            match plan(&image, req) {
                Ok(Some(change)) => planned.push((i, change)),
                Ok(None) => results[i] = Some(Ok(())),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if planned.is_empty() {
            break;
        }
        let (indexes, changes): (Vec<usize>, Vec<PartitionChangeRecord>) =
            planned.into_iter().unzip();
        let outcomes = match meta
            .propose(MetadataRecord::ChangePartitions(changes))
            .await
        {
            Ok(ApplyOutcome::Each(outcomes)) => outcomes,
            Ok(other) => vec![other; indexes.len()],
            Err(e) => {
                for i in indexes {
                    results[i] = Some(Err((errors.not_controller)(e.to_string())));
                }
                break;
            }
        };
        let last = attempt + 1 == ATTEMPTS;
        for (i, outcome) in indexes.into_iter().zip(outcomes) {
            results[i] = match outcome {
                ApplyOutcome::Ok => Some(Ok(())),
                ApplyOutcome::UnknownTopic => Some(Err(errors.topic_deleted.clone())),
                _ if last => Some(Err(errors.kept_changing.clone())),
                _ => None,
            };
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(errors.kept_changing.clone())))
        .collect()
}
