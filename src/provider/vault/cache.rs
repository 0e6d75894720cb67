//! Vault tokens cached per identity until shortly before their lease ends, logins
//! single-flighted per identity, and concurrent identical reads joined into one request.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

use super::auth::LoginToken;
use super::error::VaultError;
use super::params::Connection;
use crate::provider::slots::Slots;
use crate::redact::Redacted;

/// Who a Vault token belongs to. Two mounts share a token only when every field matches, so
/// different ServiceAccounts (or different roles, mounts, namespaces, servers) never do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Identity {
    pub connection: Connection,
    pub(crate) auth_mount: String,
    pub role: String,
    /// ServiceAccount `namespace/name` plus the token's issuer, subject and ServiceAccount
    /// uid; a digest of the token itself when none of those is known.
    pub subject: String,
}

/// Tokens without a lease are still logged in again after this long.
const MAX_TOKEN_AGE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
struct Cached {
    token: Redacted<String>,
    valid_until: Instant,
}

/// The token cache. `capacity` 0 turns caching off (a login per read, as before upstream 1.4).
#[derive(Debug)]
pub(crate) struct TokenCache {
    slots: Slots<Identity, Cached>,
}

/// When a token with `lease` should no longer be used: a tenth of the lease (at most a
/// minute) before its end.
fn valid_until(now: Instant, lease: Option<Duration>) -> Instant {
    match lease {
        Some(lease) => now + lease - (lease / 10).min(Duration::from_secs(60)),
        None => now + MAX_TOKEN_AGE,
    }
}

impl TokenCache {
    /// A cache holding at most `capacity` identities.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            slots: Slots::new(capacity),
        }
    }

    /// A valid token for `id`, logging in with `login` only if none is cached. Concurrent
    /// callers of one identity wait for a single login. The flag is true for a new token.
    pub(crate) async fn get<F, Fut>(
        &self,
        id: &Identity,
        login: F,
    ) -> Result<(Redacted<String>, bool), VaultError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<LoginToken, VaultError>>,
    {
        if self.slots.capacity() == 0 {
            return login().await.map(|t| (t.token, true));
        }
        let now = Instant::now();
        let slot = self.slots.get_or_create(id, |c| c.valid_until > now);
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref()
            && c.valid_until > Instant::now()
        {
            return Ok((c.token.clone(), false));
        }
        let started = Instant::now();
        let fresh = login().await?;
        *cached = Some(Cached {
            token: fresh.token.clone(),
            valid_until: valid_until(started, fresh.lease),
        });
        tracing::debug!(
            vault = %id.connection.address,
            mount = %id.auth_mount,
            role = %id.role,
            lease_seconds = fresh.lease.map(|l| l.as_secs()),
            "logged in to Vault"
        );
        Ok((fresh.token, true))
    }

    /// Forgets `token` for `id` (Vault refused it); a newer token stays.
    pub(crate) async fn invalidate(&self, id: &Identity, token: &Redacted<String>) {
        if let Some(slot) = self.slots.get(id) {
            let mut cached = slot.lock().await;
            if cached.as_ref().is_some_and(|c| c.token == *token) {
                *cached = None;
            }
        }
    }

    /// Number of identities with a slot (for tests and debugging).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

/// Joins concurrent calls with the same key into one execution; all get its result.
pub(crate) struct InFlight<K, V: Clone> {
    running: Mutex<HashMap<K, Shared<BoxFuture<'static, V>>>>,
}

impl<K, V: Clone> std::fmt::Debug for InFlight<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("running", &self.running.lock().unwrap().len())
            .finish()
    }
}

impl<K, V: Clone> Default for InFlight<K, V> {
    fn default() -> Self {
        Self {
            running: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone + Send + Sync + 'static> InFlight<K, V> {
    /// Runs `make()` unless a call with `key` is already running, then awaits the result.
    /// The flag is true for the caller whose `make()` ran, false for one that joined.
    pub(crate) async fn run<F>(&self, key: K, make: impl FnOnce() -> F) -> (V, bool)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let mut led = false;
        let future = self
            .running
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_insert_with(|| {
                led = true;
                make().boxed().shared()
            })
            .clone();
        let result = future.clone().await;
        let mut running = self.running.lock().unwrap();
        if running.get(&key).is_some_and(|f| f.ptr_eq(&future)) {
            running.remove(&key);
        }
        (result, led)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::provider::vault::params::TlsSettings;

    fn identity(subject: &str) -> Identity {
        Identity {
            connection: Connection {
                address: "http://127.0.0.1:8200".into(),
                from_class: true,
                namespace: None,
                tls: TlsSettings::default(),
            },
            auth_mount: "kubernetes".into(),
            role: "app".into(),
            subject: subject.into(),
        }
    }

    async fn login(count: &AtomicUsize, lease: u64) -> Result<LoginToken, VaultError> {
        let n = count.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(LoginToken {
            token: Redacted::new(format!("t{n}")),
            lease: Some(Duration::from_secs(lease)),
        })
    }

    #[tokio::test]
    async fn one_login_per_identity_under_concurrency() {
        let cache = TokenCache::new(10);
        let logins = AtomicUsize::new(0);
        let a = identity("shop/web");
        let calls = (0..50).map(|_| cache.get(&a, || login(&logins, 3600)));
        let tokens = futures::future::join_all(calls).await;
        assert_eq!(logins.load(Ordering::SeqCst), 1);
        assert!(
            tokens
                .iter()
                .all(|t| t.as_ref().unwrap().0.expose() == "t0")
        );
        let (other, fresh) = cache
            .get(&identity("shop/admin"), || login(&logins, 3600))
            .await
            .unwrap();
        assert!(fresh);
        assert_eq!(other.expose(), "t1");
        cache.invalidate(&a, &Redacted::new("t0".into())).await;
        let (again, fresh) = cache.get(&a, || login(&logins, 3600)).await.unwrap();
        assert!(fresh && again.expose() == "t2");
    }

    #[tokio::test]
    async fn short_leases_and_capacity() {
        let cache = TokenCache::new(1);
        let logins = AtomicUsize::new(0);
        cache
            .get(&identity("a"), || login(&logins, 1))
            .await
            .unwrap();
        cache
            .get(&identity("b"), || login(&logins, 1))
            .await
            .unwrap();
        assert_eq!(cache.len(), 1);
        let off = TokenCache::new(0);
        off.get(&identity("a"), || login(&logins, 60))
            .await
            .unwrap();
        off.get(&identity("a"), || login(&logins, 60))
            .await
            .unwrap();
        assert_eq!(logins.load(Ordering::SeqCst), 4);
        let now = Instant::now();
        assert_eq!(
            valid_until(now, Some(Duration::from_secs(3600))),
            now + Duration::from_secs(3540)
        );
        assert_eq!(
            valid_until(now, Some(Duration::from_secs(10))),
            now + Duration::from_secs(9)
        );
    }

    #[tokio::test]
    async fn in_flight_joins_concurrent_calls() {
        let flights: InFlight<String, usize> = InFlight::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let calls = (0..20).map(|_| {
            let runs = runs.clone();
            flights.run("k".to_owned(), move || async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                runs.fetch_add(1, Ordering::SeqCst) + 1
            })
        });
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(|r| r.0 == 1));
        assert_eq!(results.iter().filter(|r| r.1).count(), 1, "one leader");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let later = flights.run("k".to_owned(), || async { 7 }).await;
        assert_eq!(later, (7, true), "a finished call is not reused");
    }
}
