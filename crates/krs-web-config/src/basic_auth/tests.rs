//! Basic-auth checks: outcomes for each kind of header, the success cache, and the cost of
//! unknown users.

use std::sync::Arc;

use base64::Engine as _;

use super::*;
use crate::test_support::{hash, within};

fn auth(users: &[(&str, &str)]) -> BasicAuth {
    let users = users
        .iter()
        .map(|(u, p)| ((*u).to_owned(), hash(p)))
        .collect();
    BasicAuth::from_users(users, Path::new("web.yml"))
        .expect("valid users")
        .expect("at least one user")
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

fn allowed(user: &str) -> AuthResult {
    AuthResult::Allowed {
        user: user.to_owned(),
    }
}

#[test]
fn the_right_password_is_allowed_and_verified_with_bcrypt_only_once() {
    let auth = auth(&[("alice", "s3cret"), ("bob", "other")]);
    for _ in 0..3 {
        assert_eq!(
            auth.check(Some(&basic("alice", "s3cret"))),
            allowed("alice")
        );
    }
    assert_eq!(auth.bcrypt_checks(), 1);
    assert_eq!(auth.check(Some(&basic("bob", "other"))), allowed("bob"));
    assert_eq!(auth.bcrypt_checks(), 2);
}

#[test]
fn a_wrong_password_is_denied_and_checked_again_every_time() {
    let auth = auth(&[("alice", "s3cret")]);
    assert_eq!(
        auth.check(Some(&basic("alice", "s3cret"))),
        allowed("alice")
    );
    for i in 1..=3 {
        assert_eq!(
            auth.check(Some(&basic("alice", "guess"))),
            AuthResult::Denied
        );
        assert_eq!(auth.bcrypt_checks(), 1 + i);
    }
}

#[test]
fn an_unknown_user_is_denied_after_the_same_bcrypt_work_as_a_known_one() {
    let auth = auth(&[("alice", "s3cret")]);
    // alice's hash is the decoy, so this password even matches it: still denied, not cached.
    assert_eq!(
        auth.check(Some(&basic("mallory", "s3cret"))),
        AuthResult::Denied
    );
    assert_eq!(auth.bcrypt_checks(), 1);
    assert_eq!(
        auth.check(Some(&basic("mallory", "s3cret"))),
        AuthResult::Denied
    );
    assert_eq!(auth.bcrypt_checks(), 2);
}

#[test]
fn missing_headers_and_other_schemes_ask_for_credentials() {
    let auth = auth(&[("alice", "s3cret")]);
    assert_eq!(auth.check(None), AuthResult::Missing);
    assert_eq!(auth.check(Some("Bearer abc.def")), AuthResult::Missing);
    assert_eq!(auth.check(Some("")), AuthResult::Missing);
    assert_eq!(auth.bcrypt_checks(), 0);
}

#[test]
fn malformed_basic_credentials_are_denied_without_running_bcrypt() {
    let auth = auth(&[("alice", "s3cret")]);
    let no_colon = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice")
    );
    let long = format!("Basic {}", "A".repeat(5000));
    for header in [
        "Basic !!!not-base64",
        "Basic",
        no_colon.as_str(),
        long.as_str(),
    ] {
        assert_eq!(auth.check(Some(header)), AuthResult::Denied, "{header:.40}");
    }
    assert_eq!(auth.bcrypt_checks(), 0);
}

#[test]
fn the_scheme_is_case_insensitive_and_passwords_may_contain_colons() {
    let auth = auth(&[("alice", "a:b:c")]);
    let header = basic("alice", "a:b:c").replacen("Basic", "bAsIc", 1);
    assert_eq!(auth.check(Some(&header)), allowed("alice"));
}

#[test]
fn a_cached_success_does_not_let_another_password_or_user_in() {
    let auth = auth(&[("alice", "s3cret"), ("bob", "s3cret2")]);
    assert_eq!(
        auth.check(Some(&basic("alice", "s3cret"))),
        allowed("alice")
    );
    assert_eq!(
        auth.check(Some(&basic("alice", "s3cret "))),
        AuthResult::Denied
    );
    assert_eq!(
        auth.check(Some(&basic("bob", "s3cret"))),
        AuthResult::Denied
    );
}

#[test]
fn the_success_cache_is_bounded_and_evicts_the_oldest_entry() {
    let auth = auth(&[("alice", "s3cret")]);
    let first = auth.tag("alice", b"0");
    for i in 0..CACHE_CAPACITY + 10 {
        auth.remember(auth.tag("alice", i.to_string().as_bytes()));
    }
    let cache = auth.cache.lock().expect("not poisoned");
    assert_eq!(cache.tags.len(), CACHE_CAPACITY);
    assert_eq!(cache.order.len(), CACHE_CAPACITY);
    assert!(!cache.tags.contains(&first));
}

#[test]
fn invalid_hashes_and_user_names_are_refused_without_printing_the_hash() {
    let file = Path::new("web.yml");
    let users = |u: &str, h: &str| [(u.to_owned(), h.to_owned())].into_iter().collect();
    let err = BasicAuth::from_users(users("alice", "plaintext-password"), file).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("basic_auth_users.alice") && msg.contains("bcrypt"),
        "{msg}"
    );
    assert!(!msg.contains("plaintext-password"), "{msg}");

    let bad_cost = hash("x").replacen("$04$", "$99$", 1);
    let msg = BasicAuth::from_users(users("alice", &bad_cost), file)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cost is 99"), "{msg}");
    assert!(!msg.contains(&bad_cost[7..]), "{msg}");

    let msg = BasicAuth::from_users(users("a:b", &hash("x")), file)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cannot contain ':'"), "{msg}");

    assert!(BasicAuth::from_users(BTreeMap::new(), file)
        .expect("empty is valid")
        .is_none());
}

#[test]
fn debug_output_lists_users_but_no_hashes() {
    let auth = auth(&[("alice", "s3cret")]);
    let debug = format!("{auth:?}");
    assert!(debug.contains("alice"), "{debug}");
    assert!(!debug.contains("$2"), "{debug}");
}

#[tokio::test]
async fn the_async_check_gives_the_same_answers_off_the_async_workers() {
    within(async {
        let auth = auth(&[("alice", "s3cret")]);
        let good = basic("alice", "s3cret");
        assert_eq!(auth.check_async(Some(&good)).await, allowed("alice"));
        assert_eq!(auth.check_async(Some(&good)).await, allowed("alice"));
        assert_eq!(auth.bcrypt_checks(), 1);
        let bad = basic("alice", "nope");
        assert_eq!(auth.check_async(Some(&bad)).await, AuthResult::Denied);
        let stranger = basic("eve", "s3cret");
        assert_eq!(auth.check_async(Some(&stranger)).await, AuthResult::Denied);
        assert_eq!(auth.check_async(None).await, AuthResult::Missing);
        assert_eq!(auth.bcrypt_checks(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scrapes_with_the_same_credentials_cost_one_bcrypt_check() {
    within(async {
        let auth = Arc::new(auth(&[("alice", "s3cret")]));
        let header = Arc::new(basic("alice", "s3cret"));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (auth, header) = (Arc::clone(&auth), Arc::clone(&header));
                tokio::spawn(async move { auth.check_async(Some(&header)).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("no panic"), allowed("alice"));
        }
        assert_eq!(auth.bcrypt_checks(), 1);
    })
    .await;
}
