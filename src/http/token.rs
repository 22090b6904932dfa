//! Access tokens of OAuth clients (client-credentials grants), shared by every connector that
//! needs one: cached until shortly before they expire, renewed once when the peer refuses one
//! (401), one fetch at a time, never logged (they are `SecretString`s).

use secrecy::SecretString;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// A token is renewed this long before its peer says it expires, so that no request carries a
/// token that expires in flight.
const MARGIN: Duration = Duration::from_secs(60);

/// Lifetime assumed when a peer does not say (`expires_in` missing) and its connector does not
/// know better (see [`TokenCache::with_default_lifetime`]).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// What a token endpoint answered. `Debug` shows the token redacted.
#[derive(Debug)]
pub struct FetchedToken {
    pub value: SecretString,
    /// `expires_in`, if the peer said.
    pub expires_in: Option<Duration>,
}

struct Cached {
    value: SecretString,
    renew_at: Instant,
}

/// One client's token. A tokio mutex: one task fetches while the others wait for its token.
pub struct TokenCache {
    cached: tokio::sync::Mutex<Option<Cached>>,
    /// What a token without `expires_in` is taken to live.
    default_lifetime: Duration,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::with_default_lifetime(DEFAULT_LIFETIME)
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCache(..)")
    }
}

impl TokenCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// A cache for a peer whose documentation states its tokens' lifetime (e.g. 1 h for the
    /// billable-users API, docs/connectors/billable-users.md), used when a token answer carries no `expires_in`.
    pub fn with_default_lifetime(default_lifetime: Duration) -> Self {
        Self {
            cached: tokio::sync::Mutex::new(None),
            default_lifetime,
        }
    }

    /// The cached token, or a new one from `fetch` when there is none, it is due for renewal,
    /// or `renew` is set (the peer just refused the cached one).
    pub async fn get<F, Fut, E>(&self, renew: bool, fetch: F) -> Result<SecretString, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<FetchedToken, E>>,
    {
        let mut cached = self.cached.lock().await;
        if !renew && let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(token.value.clone());
        }
        *cached = None;
        let fetched = fetch().await?;
        let lifetime = fetched.expires_in.unwrap_or(self.default_lifetime);
        let early = if lifetime > MARGIN * 2 {
            lifetime - MARGIN
        } else {
            lifetime / 2
        };
        *cached = Some(Cached {
            value: fetched.value.clone(),
            renew_at: Instant::now() + early,
        });
        Ok(fetched.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::sync::atomic::{AtomicU32, Ordering};

    async fn fetch(counter: &AtomicU32, lifetime: u64) -> Result<FetchedToken, String> {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(FetchedToken {
            value: SecretString::from(format!("token-{n}")),
            expires_in: Some(Duration::from_secs(lifetime)),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_reused_until_shortly_before_it_expires() {
        let cache = TokenCache::new();
        let fetches = AtomicU32::new(0);
        let first = cache.get(false, || fetch(&fetches, 3600)).await.unwrap();
        let again = cache.get(false, || fetch(&fetches, 3600)).await.unwrap();
        assert_eq!(first.expose_secret(), again.expose_secret());
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        tokio::time::advance(Duration::from_secs(3600 - 59)).await;
        let renewed = cache.get(false, || fetch(&fetches, 3600)).await.unwrap();
        assert_eq!(renewed.expose_secret(), "token-2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_token_is_renewed_on_request() {
        let cache = TokenCache::new();
        let fetches = AtomicU32::new(0);
        cache.get(false, || fetch(&fetches, 3600)).await.unwrap();
        let renewed = cache.get(true, || fetch(&fetches, 3600)).await.unwrap();
        assert_eq!(renewed.expose_secret(), "token-2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_without_expires_in_lives_the_documented_default() {
        let fetches = AtomicU32::new(0);
        let counter = &fetches;
        let undated = move || async move {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, String>(FetchedToken {
                value: SecretString::from(format!("token-{n}")),
                expires_in: None,
            })
        };
        let hourly = TokenCache::with_default_lifetime(Duration::from_secs(3600));
        hourly.get(false, undated).await.unwrap();
        // Past the general default of 5 minutes, still short of 1 h less the margin.
        tokio::time::advance(Duration::from_secs(3600 - 61)).await;
        let kept = hourly.get(false, undated).await.unwrap();
        assert_eq!(kept.expose_secret(), "token-1");
        tokio::time::advance(Duration::from_secs(2)).await;
        let renewed = hourly.get(false, undated).await.unwrap();
        assert_eq!(renewed.expose_secret(), "token-2");

        let general = TokenCache::new();
        general.get(false, undated).await.unwrap();
        tokio::time::advance(Duration::from_secs(300)).await;
        let renewed = general.get(false, undated).await.unwrap();
        assert_eq!(renewed.expose_secret(), "token-4");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_fetch_caches_nothing() {
        let cache = TokenCache::new();
        let err: Result<SecretString, String> = cache
            .get(false, || async { Err("refused".to_owned()) })
            .await;
        assert!(err.is_err());
        let fetches = AtomicU32::new(0);
        let token = cache.get(false, || fetch(&fetches, 60)).await.unwrap();
        assert_eq!(token.expose_secret(), "token-1");
    }
}
