//! The yardstick the pipeline is measured against: the same pages fetched and parsed with
//! nothing else done — eight connections, every page asked for at once as far as they allow,
//! each body parsed into the API's record shape and dropped.
//!
//! It is what any client of this API must pay at least, measured in the same sitting as the
//! pipeline, so that "first run / bare fetch" compares two figures taken on one machine under
//! one load instead of a figure with a memory of another day.

use crate::sim::billable_users::Person;
use anyhow::{Context as _, bail};
use futures_util::{StreamExt as _, TryStreamExt as _};
use std::time::{Duration, Instant};

/// Concurrent connections of the bare fetch.
pub const CONNECTIONS: usize = 8;

/// Where the pages are and how to ask for them.
#[derive(Debug, Clone)]
pub struct Target {
    /// The list's URL without a query.
    pub list_url: String,
    pub year: i32,
    pub month: u32,
    pub pages: usize,
    pub per_page: usize,
    pub token: String,
    pub account: String,
}

/// One timed fetch of every page: how long it took and how many people it parsed.
pub async fn bare_fetch(target: &Target) -> anyhow::Result<(Duration, usize)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .context("building the yardstick's HTTP client")?;
    let started = Instant::now();
    let records = futures_util::stream::iter(1..=target.pages)
        .map(|page| fetch_page(&client, target, page))
        .buffer_unordered(CONNECTIONS)
        .try_fold(0usize, |sum, n| async move { Ok(sum + n) })
        .await?;
    Ok((started.elapsed(), records))
}

/// The fastest of `runs` fetches (at least one): the floor the machine allows this sitting.
pub async fn best_of(target: &Target, runs: usize) -> anyhow::Result<(Duration, usize)> {
    let mut best: Option<(Duration, usize)> = None;
    for _ in 0..runs.max(1) {
        let (took, records) = bare_fetch(target).await?;
        if best.is_none_or(|(fastest, _)| took < fastest) {
            best = Some((took, records));
        }
    }
    best.context("no fetch ran")
}

async fn fetch_page(
    client: &reqwest::Client,
    target: &Target,
    page: usize,
) -> anyhow::Result<usize> {
    let response = client
        .get(&target.list_url)
        .query(&[
            ("year", target.year.to_string()),
            ("month", target.month.to_string()),
            ("page", page.to_string()),
            ("per_page", target.per_page.to_string()),
        ])
        .bearer_auth(&target.token)
        .header("X-4me-Account", &target.account)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .with_context(|| format!("the bare fetch of page {page}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("the bare fetch of page {page} answered {status}");
    }
    let body = response.bytes().await?;
    let people: Vec<Person> = serde_json::from_slice(&body)
        .with_context(|| format!("the bare fetch of page {page}: not a JSON array of people"))?;
    Ok(people.len())
}
