//! The server-side assignors of consumer groups (`group.consumer.assignors`), which compute a
//! group's target assignment from its members' subscriptions and the subscribed topics:
//! `uniform` (Kafka's UniformAssignor: balanced, and sticky, since a partition stays with its
//! current target owner while that keeps the balance) and `range` (Kafka's RangeAssignor:
//! per topic, contiguous ranges over the members sorted by id, which co-partitions topics).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

use super::records::TopicMetadata;
use super::TopicPartitions;

pub const UNIFORM: &str = "uniform";
pub const RANGE: &str = "range";

/// The assignor short name for a `group.consumer.assignors` entry (Kafka accepts the class
/// names too); None for one this broker does not have.
pub fn assignor_name(configured: &str) -> Option<&'static str> {
    match configured.trim() {
        "uniform" | "org.apache.kafka.coordinator.group.assignor.UniformAssignor" => Some(UNIFORM),
        "range" | "org.apache.kafka.coordinator.group.assignor.RangeAssignor" => Some(RANGE),
        _ => None,
    }
}

/// A member as the assignor sees it: id and the subscribed topic names.
pub struct AssignorMember<'a> {
    pub member_id: &'a str,
    pub topics: BTreeSet<&'a str>,
}

/// The target assignment of every member (members without partitions get an empty one).
pub fn assign(
    assignor: &str,
    members: &[AssignorMember<'_>],
    topics: &BTreeMap<String, TopicMetadata>,
    current: &HashMap<String, TopicPartitions>,
) -> HashMap<String, TopicPartitions> {
    let mut out: HashMap<String, TopicPartitions> = members
        .iter()
        .map(|m| (m.member_id.to_string(), TopicPartitions::new()))
        .collect();
    if members.is_empty() {
        return out;
    }
    let pairs = if assignor == RANGE {
        range(members, topics)
    } else {
        uniform(members, topics, current)
    };
    for (member, topic, partition) in pairs {
        if let Some(a) = out.get_mut(member) {
            a.entry(topic).or_default().insert(partition);
        }
    }
    out
}

fn range<'a>(
    members: &[AssignorMember<'a>],
    topics: &BTreeMap<String, TopicMetadata>,
) -> Vec<(&'a str, Uuid, i32)> {
    let mut out = Vec::new();
    for (name, t) in topics {
        let mut subscribers: Vec<&str> = members
            .iter()
            .filter(|m| m.topics.contains(name.as_str()))
            .map(|m| m.member_id)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        subscribers.sort_unstable();
        let n = t.partitions.max(0) as usize;
        let (each, extra) = (n / subscribers.len(), n % subscribers.len());
        let mut next = 0usize;
        for (i, m) in subscribers.iter().enumerate() {
            let count = each + usize::from(i < extra);
            for p in next..next + count {
                out.push((*m, t.topic_id, p as i32));
            }
            next += count;
        }
    }
    out
}

fn uniform<'a>(
    members: &[AssignorMember<'a>],
    topics: &BTreeMap<String, TopicMetadata>,
    current: &HashMap<String, TopicPartitions>,
) -> Vec<(&'a str, Uuid, i32)> {
    let mut sorted: Vec<&AssignorMember<'a>> = members.iter().collect();
    sorted.sort_unstable_by_key(|m| m.member_id);
    // Every partition of a subscribed topic, with the members that may get it.
    let mut partitions: Vec<(Uuid, i32, Vec<&'a str>)> = Vec::new();
    for (name, t) in topics {
        let eligible: Vec<&'a str> = sorted
            .iter()
            .filter(|m| m.topics.contains(name.as_str()))
            .map(|m| m.member_id)
            .collect();
        if eligible.is_empty() {
            continue;
        }
        for p in 0..t.partitions.max(0) {
            partitions.push((t.topic_id, p, eligible.clone()));
        }
    }
    let owner: HashMap<(Uuid, i32), &str> = current
        .iter()
        .flat_map(|(m, tps)| {
            tps.iter()
                .flat_map(move |(t, ps)| ps.iter().map(move |p| ((*t, *p), m.as_str())))
        })
        .collect();
    let homogeneous = sorted.windows(2).all(|w| w[0].topics == w[1].topics);
    let mut load: HashMap<&'a str, usize> = sorted.iter().map(|m| (m.member_id, 0)).collect();
    let mut out = Vec::with_capacity(partitions.len());
    if homogeneous {
        // Everyone gets `base` partitions, `extra` of them one more: members keep what they
        // had up to that, the rest go to the least loaded.
        let base = partitions.len() / sorted.len();
        let mut extra = partitions.len() % sorted.len();
        let mut free = Vec::new();
        for (t, p, _) in &partitions {
            let prev = owner
                .get(&(*t, *p))
                .and_then(|o| sorted.iter().map(|m| m.member_id).find(|id| id == o));
            match prev {
                Some(m) if load[m] < base => {
                    *load.entry(m).or_default() += 1;
                    out.push((m, *t, *p));
                }
                Some(m) if load[m] == base && extra > 0 => {
                    extra -= 1;
                    *load.entry(m).or_default() += 1;
                    out.push((m, *t, *p));
                }
                _ => free.push((*t, *p)),
            }
        }
        for (t, p) in free {
            let m = least_loaded(&load, sorted.iter().map(|m| m.member_id));
            *load.entry(m).or_default() += 1;
            out.push((m, t, p));
        }
        return out;
    }
    // Different subscriptions: the most constrained partitions first, each to its current
    // owner unless another eligible member has fewer.
    partitions.sort_by_key(|(t, p, e)| (e.len(), *t, *p));
    for (t, p, eligible) in partitions {
        let least = least_loaded(&load, eligible.iter().copied());
        let prev = owner
            .get(&(t, p))
            .and_then(|o| eligible.iter().copied().find(|e| e == o));
        let m = match prev {
            Some(o) if load[o] <= load[least] => o,
            _ => least,
        };
        *load.entry(m).or_default() += 1;
        out.push((m, t, p));
    }
    out
}

fn least_loaded<'a>(
    load: &HashMap<&'a str, usize>,
    candidates: impl Iterator<Item = &'a str>,
) -> &'a str {
    let mut best: Option<(&'a str, usize)> = None;
    for c in candidates {
        let l = load.get(c).copied().unwrap_or(0);
        if best.is_none_or(|(_, bl)| l < bl) {
            best = Some((c, l));
        }
    }
    best.map(|(c, _)| c).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(spec: &[(&str, u128, i32)]) -> BTreeMap<String, TopicMetadata> {
        spec.iter()
            .map(|(n, id, parts)| {
                (
                    n.to_string(),
                    TopicMetadata {
                        topic_id: Uuid::from_u128(*id),
                        name: n.to_string(),
                        partitions: *parts,
                    },
                )
            })
            .collect()
    }

    fn counts(a: &HashMap<String, TopicPartitions>) -> Vec<usize> {
        let mut c: Vec<usize> = a
            .values()
            .map(|t| t.values().map(|p| p.len()).sum())
            .collect();
        c.sort();
        c
    }

    #[test]
    fn uniform_balances_and_sticks() {
        let t = topics(&[("t", 1, 12)]);
        let ids = ["a", "b", "c", "d"];
        let members: Vec<AssignorMember> = ids
            .iter()
            .map(|m| AssignorMember {
                member_id: m,
                topics: ["t"].into(),
            })
            .collect();
        let first = assign(UNIFORM, &members[..3], &t, &HashMap::new());
        assert_eq!(counts(&first), vec![4, 4, 4]);
        let second = assign(UNIFORM, &members, &t, &first);
        assert_eq!(counts(&second), vec![3, 3, 3, 3]);
        // Each of a, b, c gave up exactly one partition: the rest stayed.
        for m in ["a", "b", "c"] {
            let kept = second[m][&Uuid::from_u128(1)]
                .intersection(&first[m][&Uuid::from_u128(1)])
                .count();
            assert_eq!(kept, 3, "{m} kept its partitions");
        }
        // Removing d brings its partitions back, the others keep theirs.
        let third = assign(UNIFORM, &members[..3], &t, &second);
        assert_eq!(counts(&third), vec![4, 4, 4]);
        for m in ["a", "b", "c"] {
            assert!(second[m][&Uuid::from_u128(1)].is_subset(&third[m][&Uuid::from_u128(1)]));
        }
    }

    #[test]
    fn uniform_heterogeneous_respects_subscriptions() {
        let t = topics(&[("x", 1, 3), ("y", 2, 3)]);
        let members = vec![
            AssignorMember {
                member_id: "a",
                topics: ["x"].into(),
            },
            AssignorMember {
                member_id: "b",
                topics: ["x", "y"].into(),
            },
        ];
        let a = assign(UNIFORM, &members, &t, &HashMap::new());
        assert!(a["a"].keys().all(|t| *t == Uuid::from_u128(1)));
        assert_eq!(counts(&a).iter().sum::<usize>(), 6);
        assert_eq!(a["b"][&Uuid::from_u128(2)].len(), 3);
    }

    #[test]
    fn range_gives_contiguous_ranges() {
        let t = topics(&[("t", 1, 5)]);
        let members = vec![
            AssignorMember {
                member_id: "b",
                topics: ["t"].into(),
            },
            AssignorMember {
                member_id: "a",
                topics: ["t"].into(),
            },
        ];
        let a = assign(RANGE, &members, &t, &HashMap::new());
        let id = Uuid::from_u128(1);
        assert_eq!(a["a"][&id], [0, 1, 2].into());
        assert_eq!(a["b"][&id], [3, 4].into());
        assert_eq!(
            assignor_name("org.apache.kafka.coordinator.group.assignor.RangeAssignor"),
            Some(RANGE)
        );
        assert_eq!(assignor_name("sticky"), None);
    }
}
