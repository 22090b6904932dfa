//! The daemon's HTTP endpoints: `/healthz` (is the store reachable, and each job's last run
//! and next fire time) and `/metrics` (Prometheus text, rendered from the `metrics` registry the
//! daemon installs — the runs counted in `tick`, and whatever else in the process emits
//! through the `metrics` macros, such as the HTTP client's per-peer figures); with
//! `serve.in_daemon`, the review page of `tally serve` too.

use super::Daemon;
use anyhow::Context as _;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing::{info, warn};

/// How long `/healthz` waits for the store before it answers 503.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Buckets (seconds) of the request-duration histogram, from a fast answer to a slow page.
const DURATION_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The process's metrics recorder, installed once: only the daemon installs one, so other
/// commands' `metrics` calls cost nothing.
pub(super) fn install_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets_for_metric(
                Matcher::Full("tally_http_request_duration_seconds".into()),
                DURATION_BUCKETS,
            );
            let installed = builder.and_then(|b| b.install_recorder());
            let handle = match installed {
                Ok(handle) => handle,
                Err(e) => {
                    // Another recorder holds the process (a test harness): serve an empty one.
                    warn!(error = %e, "the metrics recorder could not be installed; /metrics stays empty");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            describe();
            handle
        })
        .clone()
}

/// The help text of each metric the daemon emits.
fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "tally_runs_total",
        "Scheduled runs by job and final status."
    );
    describe_counter!(
        "tally_records_read_total",
        "Records read from the sources by scheduled runs."
    );
    describe_counter!(
        "tally_lines_pushed_total",
        "Revisions pushed to the billing systems by scheduled runs."
    );
    describe_counter!(
        "tally_exceptions_total",
        "Records or lines scheduled runs could not bill."
    );
    describe_counter!(
        "tally_push_failures_total",
        "Push errors reported by scheduled runs."
    );
    describe_gauge!(
        "tally_job_last_success_timestamp_seconds",
        "Unix time a job's run last completed (with or without exceptions)."
    );
    describe_gauge!(
        "tally_job_next_run_timestamp_seconds",
        "Unix time of a job's next fire."
    );
}

#[derive(Clone)]
struct Served {
    daemon: Arc<Daemon>,
    metrics: PrometheusHandle,
}

/// Listens on `address` and serves until the daemon stops; the task ends with the server.
pub(super) async fn serve(
    daemon: Arc<Daemon>,
    metrics: PrometheusHandle,
    address: SocketAddr,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("daemon.listen: cannot listen on {address}"))?;
    let bound = listener.local_addr().unwrap_or(address);
    info!(address = %bound, "serving /healthz and /metrics on http://{bound}");
    let shutdown = daemon.app.shutdown.clone();
    // `serve.in_daemon`: the review page (src/web/) on the same port, beside these two.
    let review = if daemon.app.settings.serve.in_daemon {
        let web = crate::web::Web::new(daemon.app.store.clone(), daemon.app.settings.clone())?;
        info!(address = %bound, "serving the review page on http://{bound}/ too (serve.in_daemon)");
        Some(crate::web::router(web))
    } else {
        None
    };
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .with_state(Served { daemon, metrics });
    if let Some(review) = review {
        router = router.merge(review);
    }
    Ok(tokio::spawn(async move {
        let stopped = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(e) = stopped {
            warn!(error = %e, "the /healthz and /metrics server stopped");
        }
    }))
}

/// `/healthz`: 200 when the store answers, 503 when it does not; each job's last run (by any
/// daemon on this database) and next fire time.
async fn healthz(State(served): State<Served>) -> impl IntoResponse {
    let daemon = &served.daemon;
    let store = &daemon.app.store;
    let reachable = matches!(
        tokio::time::timeout(STORE_TIMEOUT, store.ping()).await,
        Ok(Ok(()))
    );
    let mut jobs = Vec::new();
    for (index, job) in daemon.jobs.iter().enumerate() {
        let last = if reachable {
            tokio::time::timeout(STORE_TIMEOUT, store.last_tick(&job.name))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
        } else {
            None
        };
        jobs.push(json!({
            "name": job.name,
            "last_run_id": last.as_ref().and_then(|l| l.run_id),
            "last_status": last.as_ref().and_then(|l| l.status.clone()),
            "last_finished_at": last.as_ref().and_then(|l| l.finished_at).map(|t| t.to_rfc3339()),
            "next_run": daemon.next_of(index).map(|t| t.to_rfc3339()),
        }));
    }
    let (code, status, store_state) = if reachable {
        (StatusCode::OK, "ok", "reachable")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "unreachable",
        )
    };
    let body: Value = json!({ "status": status, "store": store_state, "jobs": jobs });
    (code, Json(body))
}

/// `/metrics`: the registry in Prometheus text format.
async fn render_metrics(State(served): State<Served>) -> impl IntoResponse {
    served.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        served.metrics.render(),
    )
}
