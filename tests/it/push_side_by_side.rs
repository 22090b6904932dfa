//! RamBase and ActivePlatform are pushed side by side: while one billing system's write is in
//! flight the other's goes too, and each billing system still gets one write of tally at a
//! time. Watched by a proxy in front of each that holds every write a moment and counts the
//! writes in flight, per billing system and together.

use crate::multi_source::{app, options, sims};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tally::pipeline;

/// Writes in flight now and at most.
#[derive(Default)]
struct InFlight {
    now: AtomicU64,
    most: AtomicU64,
}

impl InFlight {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
    fn most(&self) -> u64 {
        self.most.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct Proxy {
    target: String,
    client: reqwest::Client,
    mine: Arc<InFlight>,
    both: Arc<InFlight>,
}

/// A proxy in front of `target` holding each write (any request but a GET) for 150 ms.
async fn proxy(target: &str, both: &Arc<InFlight>) -> (String, Arc<InFlight>) {
    let proxy = Proxy {
        target: target.trim_end_matches('/').to_owned(),
        client: reqwest::Client::new(),
        mine: Arc::default(),
        both: both.clone(),
    };
    let mine = proxy.mine.clone();
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, mine)
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let write = method != reqwest::Method::GET;
    if write {
        proxy.mine.enter();
        proxy.both.enter();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut outgoing = proxy
        .client
        .request(method, format!("{}{path}", proxy.target))
        .body(body);
    for (name, value) in &headers {
        if name != reqwest::header::HOST && name != reqwest::header::CONTENT_LENGTH {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = outgoing.send().await.unwrap();
    let mut response = Response::builder().status(answer.status().as_u16());
    if let Some(ct) = answer.headers().get(reqwest::header::CONTENT_TYPE) {
        response = response.header(reqwest::header::CONTENT_TYPE, ct.clone());
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    if write {
        proxy.mine.leave();
        proxy.both.leave();
    }
    response.body(Body::from(bytes)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn rambase_and_activeplatform_are_pushed_side_by_side_each_one_write_at_a_time() {
    let sims = sims().await;
    let both = Arc::new(InFlight::default());
    let (rambase_url, rambase) = proxy(&sims.rambase_url, &both).await;
    let (activeplatform_url, activeplatform) = proxy(&sims.activeplatform_url, &both).await;
    let app = app(&sims, |settings| {
        settings.sinks.rambase.as_mut().unwrap().base_url = rambase_url;
        settings.sinks.activeplatform.as_mut().unwrap().base_url = activeplatform_url;
    })
    .await;
    let report = pipeline::run(&app, &options(None)).await.unwrap();
    assert_eq!(report.summary.lines_pushed, 12, "{:?}", report.summary);
    // What each billing system received, once.
    assert_eq!(sims.rambase.usages().len(), 4);
    assert_eq!(sims.activeplatform.corrections().len(), 8);
    assert_eq!(
        rambase.most(),
        1,
        "RamBase got one write of tally at a time"
    );
    assert_eq!(
        activeplatform.most(),
        1,
        "ActivePlatform got one write at a time"
    );
    assert_eq!(
        both.most(),
        2,
        "the two billing systems were written side by side"
    );
}
