//! The HTTP client against local servers: redirects, secrets in errors, backoff, and the
//! bounded, logged waits for rate limits (on tokio's paused clock).

use super::*;
use std::sync::Arc;

/// A server that answers everything with `status` and `Location: location`, counting hits.
async fn redirecting(status: u16, location: String) -> (String, Arc<std::sync::atomic::AtomicU64>) {
    let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        let location = location.clone();
        async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            axum::response::Response::builder()
                .status(status)
                .header("location", location)
                .body(axum::body::Body::from("[]"))
                .unwrap_or_default()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

#[tokio::test]
async fn no_redirect_to_another_origin_and_none_on_a_write_is_followed() {
    // The second server answers 200 with an empty list: what a hijacked redirect would serve.
    let (elsewhere, hits) = redirecting(200, String::new()).await;
    let (peer, _) = redirecting(307, format!("{elsewhere}/collect")).await;
    let client = HttpClient::new(&HttpSettings {
        max_retries: 0,
        ..HttpSettings::default()
    })
    .unwrap();
    let read = client
        .send(Idempotency::Idempotent, |c| {
            c.get(format!("{peer}/people"))
                .header("x-api-token", "s3cret")
        })
        .await;
    assert!(
        matches!(read, Err(HttpError::Status { status, .. }) if status.as_u16() == 307),
        "{read:?}"
    );
    let write = client
        .send(Idempotency::NotIdempotent, |c| {
            c.post(format!("{peer}/corrections"))
                .header("x-api-token", "s3cret")
                .body("{\"total\":\"1.00\"}")
        })
        .await;
    let write = write.unwrap_err();
    assert!(
        matches!(write, HttpError::Status { status, .. } if status.as_u16() == 307),
        "{write:?}"
    );
    // The error says where the peer pointed and why tally did not go there.
    let text = write.to_string();
    assert!(
        text.contains(&format!("a redirect to \"{elsewhere}/collect\"")),
        "{text}"
    );
    assert!(text.contains("check the base_url"), "{text}");
    assert!(
        !write.surely_not_processed(),
        "a write redirected is uncertain, not refused"
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the other server received nothing"
    );
}

#[tokio::test]
async fn a_redirect_within_the_same_origin_is_followed_on_a_read() {
    let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = hits.clone();
    let app = axum::Router::new()
        .route(
            "/old",
            axum::routing::get(|| async { axum::response::Redirect::permanent("/new") }),
        )
        .route(
            "/new",
            axum::routing::get(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { "ok" }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = HttpClient::new(&HttpSettings::default()).unwrap();
    let response = client
        .send(Idempotency::Idempotent, |c| c.get(format!("{url}/old")))
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "ok");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A refused connection: reqwest's own message names the full URL, token and all; the
/// error tally reports must carry only the redacted one.
#[tokio::test]
async fn a_transport_error_does_not_leak_the_token() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = HttpClient::new(&HttpSettings {
        max_retries: 0,
        ..HttpSettings::default()
    })
    .unwrap();
    let url = format!("http://127.0.0.1:{port}/api/vendor/v1/accounts.json?api_token=s3cret-token");
    let err = client
        .send(Idempotency::Idempotent, |c| c.get(&url))
        .await
        .unwrap_err();
    let message = format!("{err} {err:?}");
    assert!(
        matches!(err, HttpError::Transport { not_sent: true, .. }),
        "{message}"
    );
    assert!(!message.contains("s3cret-token"), "{message}");
    assert!(message.contains("api_token=REDACTED"), "{message}");
}

#[test]
fn secrets_never_reach_a_message() {
    assert_eq!(
        redact_url("https://x.example/api/accounts.json?api_token=abc&page=2"),
        "https://x.example/api/accounts.json?api_token=REDACTED&page=2"
    );
    assert_eq!(
        redact_url("https://u:pw@x.example/a"),
        "https://u@x.example/a"
    );
    // In any case, and escaped: still taken out.
    assert_eq!(
        redact_url("https://x.example/a?API_Token=abc&Password=pw&client_SECRET=s"),
        "https://x.example/a?API_Token=REDACTED&Password=REDACTED&client_SECRET=REDACTED"
    );
    assert_eq!(
        redact_url("https://x.example/a?api%5Ftoken=abc"),
        "https://x.example/a?api_token=REDACTED"
    );
    // Nothing to take out: the URL as it is.
    let page =
        "https://api.x.example/v1/account/billable_users?year=2026&month=10&page=7&per_page=100";
    assert_eq!(redact_url(page), page);
}

#[test]
fn backoff_grows_and_stays_bounded() {
    let client = HttpClient::new(&HttpSettings::default()).unwrap();
    for attempt in 0..30 {
        let wait = client.backoff(attempt);
        assert!(wait <= Duration::from_millis(30_000), "{attempt}: {wait:?}");
    }
    assert!(client.backoff(0) <= Duration::from_millis(500));
    assert!(client.backoff(3) >= Duration::from_millis(2_000));
}

/// Everything logged while the guard lives (on this thread: the tests' runtime is current-thread).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (logs, guard)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// An answer's headers saying the window is used up and resets `secs` from now.
fn used_up_for(secs: u64) -> reqwest::header::HeaderMap {
    let reset = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
    headers.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
    headers
}

const PEOPLE: &str = "https://api.example.com/v1/people?page=3";

#[tokio::test(start_paused = true)]
async fn a_long_wait_for_a_used_up_window_is_logged_with_its_reason_url_and_end() {
    let (logs, _guard) = Logs::capture();
    let client = HttpClient::new(&HttpSettings::default()).unwrap();
    // Longer than max_retry_after_secs (900 s), shorter than the run's deadline: waited for.
    client.note_rate_limit(&used_up_for(1_800));
    let started = Instant::now();

    let waited = with_deadline(
        Deadline::after_secs(3_600),
        client.wait_for_window(&Method::GET, PEOPLE),
    )
    .await;

    assert!(waited.is_ok(), "{waited:?}");
    assert!(Instant::now() >= started + Duration::from_secs(1_799));
    let text = logs.text();
    assert!(text.contains("WARN"), "{text}");
    assert!(
        text.contains("for the peer's rate limit, until 20"),
        "{text}"
    );
    assert!(text.contains("X-RateLimit-Remaining: 0"), "{text}");
    assert!(text.contains(PEOPLE), "{text}");
    // The window has reset: the next request goes at once, silently.
    let logged = text.len();
    client.wait_for_window(&Method::GET, PEOPLE).await.unwrap();
    assert_eq!(logs.text().len(), logged, "{}", logs.text());
}

#[tokio::test(start_paused = true)]
async fn a_window_resetting_after_the_deadline_fails_at_once_naming_url_wait_and_deadline() {
    let client = HttpClient::new(&HttpSettings::default()).unwrap();
    client.note_rate_limit(&used_up_for(7_200));
    let started = Instant::now();

    let err = with_deadline(
        Deadline::after_secs(600),
        client.wait_for_window(&Method::GET, PEOPLE),
    )
    .await
    .unwrap_err();

    assert_eq!(Instant::now(), started, "nothing was waited for");
    assert!(
        matches!(
            err,
            HttpError::RateLimited {
                limit: WaitLimit::Deadline {
                    run_deadline_secs: 600,
                    ..
                },
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    for expected in [
        "GET https://api.example.com/v1/people?page=3 is rate limited",
        "its rate-limit window is used up (X-RateLimit-Remaining: 0",
        "which ends after this run's deadline",
        "general.run_deadline_secs = 600",
    ] {
        assert!(text.contains(expected), "{expected} missing in {text}");
    }
    assert!(
        text.contains("a wait of 7199 s") || text.contains("a wait of 7200 s"),
        "{text}"
    );
    assert!(
        err.rate_limit_advice("sources.x")
            .contains("general.run_deadline_secs")
    );
    assert!(err.surely_not_processed());
}

#[tokio::test(start_paused = true)]
async fn outside_a_run_a_window_longer_than_max_retry_after_fails_instead_of_waiting() {
    let client = HttpClient::new(&HttpSettings::default()).unwrap();
    client.note_rate_limit(&used_up_for(7_200));
    let err = client
        .wait_for_window(&Method::POST, PEOPLE)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            HttpError::RateLimited {
                limit: WaitLimit::MaxRetryAfter { max_secs: 900 },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("POST "), "{err}");
    assert!(
        err.rate_limit_advice("sinks.rambase")
            .contains("sinks.rambase.http.max_retry_after_secs")
    );
}

#[tokio::test(start_paused = true)]
async fn unreadable_rate_limit_headers_pause_nothing() {
    let client = HttpClient::new(&HttpSettings::default()).unwrap();
    for (remaining, reset) in [("0", "soon"), ("-1", "1"), ("0", "-99"), ("lots", "")] {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-ratelimit-remaining", remaining.parse().unwrap());
        headers.insert("x-ratelimit-reset", reset.parse().unwrap());
        client.note_rate_limit(&headers);
        let started = Instant::now();
        client.wait_for_window(&Method::GET, PEOPLE).await.unwrap();
        assert_eq!(Instant::now(), started, "{remaining:?} {reset:?}");
    }
}

/// A peer that answers every request 200 with an HTML page (a proxy's sign-in page, say).
async fn answering_html() -> String {
    let app = axum::Router::new().fallback(|| async { "<html>sign in</html>" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn an_unreadable_answer_names_the_method_that_was_sent() {
    let peer = answering_html().await;
    let client = HttpClient::new(&HttpSettings::default()).unwrap();
    let post: Result<serde_json::Value, _> = client
        .send_json(Idempotency::Idempotent, |c| {
            c.post(format!("{peer}/oauth2/access_token"))
                .form(&[("client_secret", "s3cret")])
        })
        .await;
    let err = post.unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "POST {peer}/oauth2/access_token answered with a body"
        )),
        "{err}"
    );
    assert!(!err.to_string().contains("s3cret"), "{err}");
    let get: Result<serde_json::Value, _> = client
        .send_json(Idempotency::Idempotent, |c| c.get(format!("{peer}/people")))
        .await;
    assert!(get.unwrap_err().to_string().starts_with("GET "));
}

/// A shared pace whose every start is `wait` away, counting the starts taken and shared.
struct FixedPace {
    wait: Duration,
    taken: std::sync::atomic::AtomicU64,
}

impl SharedPace for FixedPace {
    fn take_slot<'a>(
        &'a self,
        _peer: &'a str,
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<Option<Duration>>> {
        self.taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move { Ok(Some(self.wait)) })
    }

    fn share<'a>(
        &'a self,
        _peer: &'a str,
        _pace: Duration,
        _reopens_in: Duration,
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_start_the_round_gives_is_waited_for_within_the_runs_deadline_and_refused_past_it() {
    let (peer, hits) = redirecting(200, String::new()).await;
    let client = HttpClient::new(&HttpSettings::default()).unwrap();
    let url = format!("{peer}/people");
    let get = || client.send(Idempotency::Idempotent, |c| c.get(url.as_str()));

    let soon = Arc::new(FixedPace {
        wait: Duration::from_millis(150),
        taken: Default::default(),
    });
    let started = Instant::now();
    let answered = with_deadline(
        Deadline::after_secs(600),
        with_shared_pace(soon.clone(), get()),
    )
    .await;
    assert!(answered.is_ok(), "{answered:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "the start was waited for"
    );
    assert_eq!(soon.taken.load(std::sync::atomic::Ordering::SeqCst), 1);

    // A start two hours away in a run that must end within one: not begun, not sent.
    let late = Arc::new(FixedPace {
        wait: Duration::from_secs(7_200),
        taken: Default::default(),
    });
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    let refused = with_deadline(Deadline::after_secs(3_600), with_shared_pace(late, get())).await;
    match refused {
        Err(HttpError::RateLimited {
            limit: WaitLimit::Deadline { .. },
            asked,
            ..
        }) => {
            assert!(asked.contains("worker of the round"), "{asked}")
        }
        other => panic!("expected a wait refused by the deadline: {other:?}"),
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before);
}
