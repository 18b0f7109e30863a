//! Exporter-side sharding, kube-state-metrics style: with `--shard.total N`, replica `I` polls
//! only the tasks whose stable hash of the id is `I` modulo `N`. Every replica reads the same
//! watch list; together they poll each task exactly once.
//!
//! The hash is FNV-1a over the canonical (lowercase) id, written out here so it never changes
//! with the standard library or the platform: the same task stays on the same shard across
//! releases and restarts.

use std::fmt;

use thiserror::Error;

use crate::config::TaskId;

/// This replica's place among `total` shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    total: u32,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ShardError {
    #[error("--shard.index {0:?}: expected a number or a StatefulSet pod name ending in -N (such as krs-exporter-2)")]
    Index(String),
    #[error("--shard.total {0}: must be at least 1")]
    Total(u32),
    #[error("--shard.index {index} is out of range for --shard.total {total} (0 to {max})", max = .total - 1)]
    OutOfRange { index: u32, total: u32 },
}

impl Shard {
    /// The whole watch list: no sharding.
    pub const ALL: Shard = Shard { index: 0, total: 1 };

    /// `index` is a number or a pod name whose last `-`-separated part is a number, so that
    /// `--shard.index=$(POD_NAME)` works in a StatefulSet.
    pub fn parse(index: &str, total: u32) -> Result<Shard, ShardError> {
        if total == 0 {
            return Err(ShardError::Total(total));
        }
        let ordinal = index.rsplit('-').next().unwrap_or(index).trim();
        let index = ordinal
            .parse::<u32>()
            .map_err(|_| ShardError::Index(index.to_string()))?;
        if index >= total {
            return Err(ShardError::OutOfRange { index, total });
        }
        Ok(Shard { index, total })
    }

    pub fn index(self) -> u32 {
        self.index
    }

    pub fn total(self) -> u32 {
        self.total
    }

    /// Whether this replica polls `task`.
    pub fn owns(self, task: &TaskId) -> bool {
        self.total == 1
            || stable_hash(task.as_str().as_bytes()) % u64::from(self.total)
                == u64::from(self.index)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {}", self.index, self.total)
    }
}

/// 64-bit FNV-1a of `bytes`.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<TaskId> {
        (0..n)
            .map(|i| TaskId::parse(&format!("{i:08x}-0000-4000-8000-000000000000")).unwrap())
            .collect()
    }

    #[test]
    fn every_task_belongs_to_exactly_one_shard() {
        let tasks = ids(1000);
        let shards: Vec<Shard> = (0..3)
            .map(|i| Shard::parse(&i.to_string(), 3).unwrap())
            .collect();
        let mut sizes = [0usize; 3];
        for t in &tasks {
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].owns(t)).collect();
            assert_eq!(owners.len(), 1, "{t} owned by {owners:?}");
            sizes[owners[0]] += 1;
        }
        assert!(
            sizes.iter().all(|&n| (250..=420).contains(&n)),
            "uneven shards {sizes:?}"
        );
    }

    #[test]
    fn a_statefulset_pod_name_gives_the_index() {
        assert_eq!(Shard::parse("krs-exporter-2", 3).unwrap().index(), 2);
        assert_eq!(Shard::parse("1", 3).unwrap().index(), 1);
        assert_eq!(
            Shard::parse("krs-exporter-3", 3),
            Err(ShardError::OutOfRange { index: 3, total: 3 })
        );
        assert!(matches!(
            Shard::parse("krs-exporter", 3),
            Err(ShardError::Index(_))
        ));
        assert_eq!(Shard::parse("0", 0), Err(ShardError::Total(0)));
    }

    #[test]
    fn one_shard_owns_everything() {
        assert!(ids(100).iter().all(|t| Shard::ALL.owns(t)));
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(stable_hash(b""), 0xcbf29ce484222325);
        assert_eq!(stable_hash(b"a"), 0xaf63dc4c8601ec8c);
    }
}
