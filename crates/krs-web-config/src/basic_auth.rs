//! `basic_auth_users`: HTTP basic authentication against bcrypt hashes.
//!
//! bcrypt is slow by design (tens to hundreds of milliseconds per check), and Prometheus sends
//! the same credentials on every scrape, so a successful check is remembered: the cache holds
//! an HMAC-SHA-256 (random per-process key) of `user` and the attempted password, never the
//! password, and is bounded to [`CACHE_CAPACITY`] entries (oldest evicted first). Failures
//! are never cached, so a wrong password costs a full bcrypt check every time.
//!
//! An unknown user costs one bcrypt check against a configured user's hash, the result thrown
//! away, so response time does not reveal which user names exist. [`BasicAuth::check_async`]
//! runs bcrypt on the blocking pool, one check at a time, so a flood of bad passwords
//! occupies one core rather than all of them.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use ring::hmac;
use tokio::sync::Semaphore;

use super::WebConfigError;

/// Successful credential checks remembered at most.
pub const CACHE_CAPACITY: usize = 1024;

/// The `WWW-Authenticate` value to send with a 401.
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"krs-exporter\", charset=\"UTF-8\"";

/// An `Authorization` header longer than this is refused without decoding.
const MAX_HEADER_LEN: usize = 4096;

/// The outcome of checking a request's `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthResult {
    /// Valid credentials for this user.
    Allowed { user: String },
    /// No basic credentials: no header, or another scheme. Answer 401 with the challenge.
    Missing,
    /// Basic credentials that are malformed, for an unknown user, or with a wrong password.
    /// Answer 401 with the challenge; do not say which.
    Denied,
}

/// The configured users and the cache of successful checks. Share it behind an `Arc`.
pub struct BasicAuth {
    /// User name → bcrypt hash (validated at load).
    users: BTreeMap<String, String>,
    /// The hash an unknown user is checked against; one of the configured ones, so the time
    /// taken matches a real check.
    decoy_hash: String,
    cache_key: hmac::Key,
    cache: Mutex<VerifiedCache>,
    /// One bcrypt check at a time on the async path.
    bcrypt_slot: Semaphore,
    /// bcrypt checks performed (cache misses).
    verifications: AtomicU64,
}

/// HMAC tags of recently verified credentials, insertion-ordered for eviction.
#[derive(Default)]
struct VerifiedCache {
    tags: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

/// Credentials taken from a header, about to be checked.
struct Attempt {
    user: String,
    password: Vec<u8>,
    tag: [u8; 32],
    known: bool,
    hash: String,
}

impl BasicAuth {
    /// Validates the users of `basic_auth_users` in `file`. `Ok(None)` when there are none.
    pub(super) fn from_users(
        users: BTreeMap<String, String>,
        file: &Path,
    ) -> Result<Option<BasicAuth>, WebConfigError> {
        let invalid = |key: String, problem: String| WebConfigError::Invalid {
            file: file.to_owned(),
            key,
            problem,
        };
        let mut decoy: Option<(u32, &String)> = None;
        for (user, hash) in &users {
            let key = format!("basic_auth_users.{user}");
            if user.contains(':') {
                return Err(invalid(
                    key,
                    "a user name cannot contain ':' (basic auth splits on it)".into(),
                ));
            }
            // The parse error text is static; the hash itself is never printed.
            let parts: bcrypt::HashParts = hash.parse().map_err(|e: bcrypt::BcryptError| {
                invalid(
                    key.clone(),
                    format!("expected a bcrypt hash such as `htpasswd -nBC 10 \"\"` prints: {e}"),
                )
            })?;
            if !(4..=31).contains(&parts.get_cost()) {
                return Err(invalid(
                    key,
                    format!("the bcrypt cost is {}; expected 4 to 31", parts.get_cost()),
                ));
            }
            // Decoy with the highest cost, so an unknown user is never the faster answer.
            if decoy.is_none_or(|(cost, _)| parts.get_cost() > cost) {
                decoy = Some((parts.get_cost(), hash));
            }
        }
        let Some((_, decoy_hash)) = decoy else {
            return Ok(None);
        };
        let decoy_hash = decoy_hash.clone();
        let cache_key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| {
                invalid(
                    "basic_auth_users".into(),
                    "cannot draw a random key for the credential cache".into(),
                )
            })?;
        Ok(Some(BasicAuth {
            users,
            decoy_hash,
            cache_key,
            cache: Mutex::new(VerifiedCache::default()),
            bcrypt_slot: Semaphore::new(1),
            verifications: AtomicU64::new(0),
        }))
    }

    /// Checks an `Authorization` header value, running bcrypt on this thread when needed
    /// (up to hundreds of milliseconds): do not call it on an async worker, use
    /// [`BasicAuth::check_async`] there.
    pub fn check(&self, authorization_header: Option<&str>) -> AuthResult {
        let attempt = match self.prepare(authorization_header) {
            Ok(attempt) => attempt,
            Err(done) => return done,
        };
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let ok = bcrypt::verify(&attempt.password, &attempt.hash).unwrap_or(false);
        self.finish(attempt, ok)
    }

    /// Checks an `Authorization` header value; bcrypt runs on the blocking pool, one check at a
    /// time, and cached successes answer without it.
    pub async fn check_async(&self, authorization_header: Option<&str>) -> AuthResult {
        let attempt = match self.prepare(authorization_header) {
            Ok(attempt) => attempt,
            Err(done) => return done,
        };
        let Ok(_permit) = self.bcrypt_slot.acquire().await else {
            // The semaphore is never closed; refuse rather than skip the check.
            return AuthResult::Denied;
        };
        // The same credentials may have been verified while this request waited.
        if attempt.known && self.cached(&attempt.tag) {
            return AuthResult::Allowed { user: attempt.user };
        }
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let (password, hash) = (attempt.password.clone(), attempt.hash.clone());
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .is_ok_and(|r| r.unwrap_or(false));
        self.finish(attempt, ok)
    }

    /// The configured user names.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// bcrypt checks performed so far: each cache miss is one, a cached success is none.
    /// For metrics, and for tests proving that repeated credentials are verified once.
    pub fn bcrypt_checks(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Parses the header; `Err` is an answer that needs no bcrypt check.
    fn prepare(&self, header: Option<&str>) -> Result<Attempt, AuthResult> {
        let (user, password) = match parse_basic(header) {
            Parsed::Missing => return Err(AuthResult::Missing),
            Parsed::Malformed => return Err(AuthResult::Denied),
            Parsed::Credentials { user, password } => (user, password),
        };
        let tag = self.tag(&user, &password);
        let (known, hash) = match self.users.get(&user) {
            Some(hash) => (true, hash.clone()),
            None => (false, self.decoy_hash.clone()),
        };
        if known && self.cached(&tag) {
            return Err(AuthResult::Allowed { user });
        }
        Ok(Attempt {
            user,
            password,
            tag,
            known,
            hash,
        })
    }

    fn finish(&self, attempt: Attempt, password_ok: bool) -> AuthResult {
        if attempt.known && password_ok {
            self.remember(attempt.tag);
            AuthResult::Allowed { user: attempt.user }
        } else {
            AuthResult::Denied
        }
    }

    fn tag(&self, user: &str, password: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.cache_key);
        ctx.update(&(user.len() as u64).to_be_bytes());
        ctx.update(user.as_bytes());
        ctx.update(password);
        let mut tag = [0u8; 32];
        tag.copy_from_slice(ctx.sign().as_ref());
        tag
    }

    fn cached(&self, tag: &[u8; 32]) -> bool {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tags
            .contains(tag)
    }

    fn remember(&self, tag: [u8; 32]) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if !cache.tags.insert(tag) {
            return;
        }
        cache.order.push_back(tag);
        while cache.order.len() > CACHE_CAPACITY {
            if let Some(oldest) = cache.order.pop_front() {
                cache.tags.remove(&oldest);
            }
        }
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // User names only: hashes and the cache stay out of logs.
        f.debug_struct("BasicAuth")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

enum Parsed {
    Missing,
    Malformed,
    Credentials { user: String, password: Vec<u8> },
}

/// Parses `Basic base64(user:password)` (RFC 7617); the scheme is case-insensitive.
fn parse_basic(header: Option<&str>) -> Parsed {
    let Some(header) = header.map(str::trim) else {
        return Parsed::Missing;
    };
    let (scheme, rest) = header.split_once([' ', '\t']).unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Parsed::Missing;
    }
    if header.len() > MAX_HEADER_LEN {
        return Parsed::Malformed;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
        return Parsed::Malformed;
    };
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return Parsed::Malformed;
    };
    let Ok(user) = String::from_utf8(decoded[..colon].to_vec()) else {
        return Parsed::Malformed;
    };
    Parsed::Credentials {
        user,
        password: decoded[colon + 1..].to_vec(),
    }
}

#[cfg(test)]
mod tests;
