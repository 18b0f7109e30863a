//! The table of open connections: who may connect, who is evicted to make room, and when an
//! idle connection's time is up. Pure bookkeeping with the clock passed in; the server applies
//! its answers.
//!
//! Rules, in the order [`Table::admit`] applies them:
//! 1. A peer (source IP address; IPv4-mapped IPv6 counts as the IPv4 address) holds at most
//!    `per_peer` connections. One more is refused at once ([`Refusal::PerPeerLimit`]), never
//!    queued: the accept loop goes on accepting.
//! 2. The whole table holds at most `total` connections. When it is full, an *idle* connection
//!    is evicted to make room: one that has not yet sent a complete request, or that sits
//!    between requests. The victim is the longest-idle connection of the peer holding the most
//!    connections, so the peer crowding the table pays first. A connection serving a request
//!    (headers read, answer not yet fully written) is never evicted. With nothing idle to evict
//!    the newcomer is refused ([`Refusal::Full`]).
//! 3. A new connection must complete its first request's headers (TLS handshake included)
//!    within `first_request` of being accepted; after an answer, the next request's headers
//!    must be complete within `idle` ([`Table::deadline`]).
//!
//! Measured before these rules (one 512-connection cap, a 10 s header timeout): 2,000 slow or
//! idle sockets from one address left 10 of 12 scrapes from another address unanswered after
//! 2 s. With them, every scrape answered (`docs/reliability.md`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// The table's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most.
    pub total: usize,
    /// Open connections per peer address at most.
    pub per_peer: usize,
    /// From accept to the first request's complete headers.
    pub first_request: Duration,
    /// From an answer to the next request's complete headers.
    pub idle: Duration,
}

/// Identifies one admitted connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

/// Why a new connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its peer already holds `per_peer` connections.
    PerPeerLimit,
    /// The table is full and every connection in it is serving a request.
    Full,
}

/// Why an idle connection's time is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// The first request's headers did not arrive within `first_request`.
    FirstRequest,
    /// No new request within `idle` of the previous answer.
    Idle,
}

/// The answer to a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission<H> {
    /// Serve it; `evicted` is the handle of the idle connection that made room, to be closed.
    Admitted { id: ConnId, evicted: Option<H> },
    /// Close it now.
    Refused(Refusal),
}

/// What a connection is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// It has been evicted (no longer in the table): close it.
    Gone,
    /// It is serving a request: no deadline.
    Serving,
    /// It must start a request by then, or close for the given reason.
    At(Instant, Expiry),
}

/// Open connections by id, each with the caller's handle `H` (used to close an evicted one).
#[derive(Debug)]
pub struct Table<H> {
    limits: Limits,
    entries: HashMap<ConnId, Entry<H>>,
    /// Open connections per peer, kept in step with `entries` (no zero counts).
    peers: HashMap<IpAddr, usize>,
    next_id: u64,
}

#[derive(Debug)]
struct Entry<H> {
    peer: IpAddr,
    phase: Phase,
    handle: H,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Accepted at `since`; no request yet.
    Fresh { since: Instant },
    /// Serving this many requests (more than one only when a client pipelines).
    Serving { requests: usize },
    /// Answered its last request at `since`.
    Idle { since: Instant },
}

impl<H> Table<H> {
    pub fn new(limits: Limits) -> Self {
        Table {
            limits,
            entries: HashMap::new(),
            peers: HashMap::new(),
            next_id: 0,
        }
    }

    /// Decides on a connection from `peer` accepted at `now` (see the module doc's rules).
    pub fn admit(&mut self, peer: IpAddr, now: Instant, handle: H) -> Admission<H> {
        let peer = peer.to_canonical();
        if self.peers.get(&peer).copied().unwrap_or(0) >= self.limits.per_peer {
            return Admission::Refused(Refusal::PerPeerLimit);
        }
        let mut evicted = None;
        if self.entries.len() >= self.limits.total {
            let Some(victim) = self.eviction_victim() else {
                return Admission::Refused(Refusal::Full);
            };
            evicted = self.remove(victim);
        }
        let id = ConnId(self.next_id);
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                peer,
                phase: Phase::Fresh { since: now },
                handle,
            },
        );
        *self.peers.entry(peer).or_insert(0) += 1;
        Admission::Admitted { id, evicted }
    }

    /// A request's headers are complete: the connection is serving until as many
    /// [`Table::answered`] calls.
    pub fn serving(&mut self, id: ConnId) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.phase = match entry.phase {
                Phase::Serving { requests } => Phase::Serving {
                    requests: requests + 1,
                },
                Phase::Fresh { .. } | Phase::Idle { .. } => Phase::Serving { requests: 1 },
            };
        }
    }

    /// A request's answer is fully written (or abandoned) at `now`; with none left the
    /// connection is idle.
    pub fn answered(&mut self, id: ConnId, now: Instant) {
        if let Some(entry) = self.entries.get_mut(&id) {
            if let Phase::Serving { requests } = entry.phase {
                entry.phase = if requests > 1 {
                    Phase::Serving {
                        requests: requests - 1,
                    }
                } else {
                    Phase::Idle { since: now }
                };
            }
        }
    }

    /// When the connection must have started a request.
    pub fn deadline(&self, id: ConnId) -> Deadline {
        match self.entries.get(&id).map(|e| e.phase) {
            None => Deadline::Gone,
            Some(Phase::Serving { .. }) => Deadline::Serving,
            Some(Phase::Fresh { since }) => {
                Deadline::At(since + self.limits.first_request, Expiry::FirstRequest)
            }
            Some(Phase::Idle { since }) => Deadline::At(since + self.limits.idle, Expiry::Idle),
        }
    }

    /// Forgets a connection (closed, expired or evicted), returning its handle if it was open.
    pub fn remove(&mut self, id: ConnId) -> Option<H> {
        let entry = self.entries.remove(&id)?;
        if let Some(count) = self.peers.get_mut(&entry.peer) {
            *count -= 1;
            if *count == 0 {
                self.peers.remove(&entry.peer);
            }
        }
        Some(entry.handle)
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Open connections from `peer`.
    #[cfg(test)]
    pub fn held_by(&self, peer: IpAddr) -> usize {
        self.peers.get(&peer.to_canonical()).copied().unwrap_or(0)
    }

    /// The longest-idle connection of the peer with the most connections; ties between peers
    /// go to the one whose candidate has been idle longest. `None` when every one is serving.
    fn eviction_victim(&self) -> Option<ConnId> {
        self.entries
            .iter()
            .filter_map(|(id, e)| match e.phase {
                Phase::Fresh { since } | Phase::Idle { since } => Some((id, e.peer, since)),
                Phase::Serving { .. } => None,
            })
            // Most connections first, then oldest, then lowest id for a stable choice.
            .min_by_key(|(id, peer, since)| {
                (
                    std::cmp::Reverse(self.peers.get(peer).copied().unwrap_or(0)),
                    *since,
                    **id,
                )
            })
            .map(|(id, _, _)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn limits(total: usize, per_peer: usize) -> Limits {
        Limits {
            total,
            per_peer,
            first_request: 5 * SEC,
            idle: 30 * SEC,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn admitted<H: std::fmt::Debug>(a: Admission<H>) -> (ConnId, Option<H>) {
        match a {
            Admission::Admitted { id, evicted } => (id, evicted),
            refused => panic!("expected admission, got {refused:?}"),
        }
    }

    #[test]
    fn a_peer_at_its_limit_is_refused_while_other_peers_are_admitted() {
        let now = Instant::now();
        let mut t = Table::new(limits(100, 2));
        admitted(t.admit(ip(2), now, "a"));
        admitted(t.admit(ip(2), now, "b"));
        assert_eq!(
            t.admit(ip(2), now, "c"),
            Admission::Refused(Refusal::PerPeerLimit)
        );
        admitted(t.admit(ip(1), now, "scraper"));
        assert_eq!((t.len(), t.held_by(ip(2)), t.held_by(ip(1))), (3, 2, 1));
    }

    #[test]
    fn a_closed_connection_frees_its_peers_slot() {
        let now = Instant::now();
        let mut t = Table::new(limits(100, 1));
        let (id, _) = admitted(t.admit(ip(2), now, ()));
        assert_eq!(
            t.admit(ip(2), now, ()),
            Admission::Refused(Refusal::PerPeerLimit)
        );
        assert_eq!(t.remove(id), Some(()));
        assert_eq!(t.remove(id), None, "removing twice is harmless");
        admitted(t.admit(ip(2), now, ()));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn an_ipv4_mapped_ipv6_peer_counts_as_its_ipv4_address() {
        let now = Instant::now();
        let mut t = Table::new(limits(100, 1));
        admitted(t.admit(ip(2), now, ()));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(
            t.admit(mapped, now, ()),
            Admission::Refused(Refusal::PerPeerLimit)
        );
    }

    #[test]
    fn a_full_table_evicts_the_longest_idle_connection_of_the_biggest_peer() {
        let start = Instant::now();
        let mut t = Table::new(limits(4, 3));
        let (old_a, _) = admitted(t.admit(ip(2), start, "a1"));
        admitted(t.admit(ip(2), start + SEC, "a2"));
        admitted(t.admit(ip(2), start + 2 * SEC, "a3"));
        let (b, _) = admitted(t.admit(ip(3), start, "b1"));
        // b1 has waited as long as a1, but ip(3) holds fewer connections.
        let (_, evicted) = admitted(t.admit(ip(1), start + 3 * SEC, "scraper"));
        assert_eq!(evicted, Some("a1"));
        assert_eq!(t.deadline(old_a), Deadline::Gone);
        assert_ne!(t.deadline(b), Deadline::Gone);
        assert_eq!((t.len(), t.held_by(ip(2))), (4, 2));
    }

    #[test]
    fn a_connection_idle_between_requests_is_evicted_like_one_that_never_sent_a_request() {
        let start = Instant::now();
        let mut t = Table::new(limits(2, 2));
        admitted(t.admit(ip(2), start + SEC, "fresh"));
        let (kept_alive, _) = admitted(t.admit(ip(2), start, "kept-alive"));
        t.serving(kept_alive);
        t.answered(kept_alive, start + 2 * SEC);
        // The fresh one has waited since 1 s, the kept-alive one only since 2 s.
        let (_, evicted) = admitted(t.admit(ip(1), start + 3 * SEC, "new"));
        assert_eq!(evicted, Some("fresh"));
        // One connection each now: the longer idle goes.
        let (_, evicted) = admitted(t.admit(ip(3), start + 4 * SEC, "newer"));
        assert_eq!(evicted, Some("kept-alive"));
    }

    #[test]
    fn a_connection_serving_a_request_is_never_evicted() {
        let now = Instant::now();
        let mut t = Table::new(limits(2, 2));
        let (a, _) = admitted(t.admit(ip(2), now, "a"));
        let (b, _) = admitted(t.admit(ip(2), now, "b"));
        t.serving(a);
        t.serving(b);
        assert_eq!(t.admit(ip(1), now, "c"), Admission::Refused(Refusal::Full));
        t.answered(b, now + SEC);
        let (_, evicted) = admitted(t.admit(ip(1), now + SEC, "c"));
        assert_eq!(evicted, Some("b"));
        assert_eq!(t.deadline(a), Deadline::Serving);
    }

    #[test]
    fn the_first_request_is_due_soon_after_accept_and_later_ones_within_the_idle_timeout() {
        let start = Instant::now();
        let mut t = Table::new(limits(10, 10));
        let (id, _) = admitted(t.admit(ip(2), start, ()));
        assert_eq!(
            t.deadline(id),
            Deadline::At(start + 5 * SEC, Expiry::FirstRequest)
        );
        t.serving(id);
        assert_eq!(t.deadline(id), Deadline::Serving);
        t.answered(id, start + 8 * SEC);
        assert_eq!(t.deadline(id), Deadline::At(start + 38 * SEC, Expiry::Idle));
    }

    #[test]
    fn a_pipelining_connection_is_idle_only_once_every_answer_is_written() {
        let start = Instant::now();
        let mut t = Table::new(limits(10, 10));
        let (id, _) = admitted(t.admit(ip(2), start, ()));
        t.serving(id);
        t.serving(id);
        t.answered(id, start + SEC);
        assert_eq!(t.deadline(id), Deadline::Serving);
        t.answered(id, start + 2 * SEC);
        assert_eq!(t.deadline(id), Deadline::At(start + 32 * SEC, Expiry::Idle));
        t.answered(id, start + 3 * SEC);
        assert_eq!(
            t.deadline(id),
            Deadline::At(start + 32 * SEC, Expiry::Idle),
            "an answer too many does not move the deadline"
        );
    }

    #[test]
    fn updates_for_a_connection_no_longer_in_the_table_change_nothing() {
        let now = Instant::now();
        let mut t = Table::new(limits(1, 1));
        let (id, _) = admitted(t.admit(ip(2), now, ()));
        t.remove(id);
        t.serving(id);
        t.answered(id, now);
        assert_eq!(t.deadline(id), Deadline::Gone);
        assert_eq!(t.len(), 0);
    }
}
