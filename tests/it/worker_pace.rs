//! Workers keep one pace for a peer's unannounced limit: three real `tally run --worker`
//! processes read CCC services behind a limit CCC never announces; the first worker meets it
//! once, and the two that join after that 429 take their request starts from the pace it
//! revealed (kept in Postgres for the round) instead of meeting the limit themselves.

use crate::common;
use crate::workers::{
    checkout_of, database_url, file_lines, lines_of_one_tally, start_ccc_of, tally, wait,
};

use std::time::{Duration, Instant};

const SERVICES: u32 = 6;
const USERS: usize = 4;

fn worker(config: &std::path::Path) -> std::process::Child {
    tally(
        config,
        &[
            "run",
            "--period",
            "2026-10",
            "--worker",
            "--round",
            "paced-night",
            "--output",
            "json",
        ],
    )
    .spawn()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_that_join_after_a_429_keep_to_the_pace_it_revealed_and_meet_no_429_themselves() {
    // One request at a time per worker, so that the first worker's meeting with the limit is one
    // 429 and not a burst of the requests it had in flight.
    let reading = "concurrency = 1\nscopes_at_once = 1";
    let expected = lines_of_one_tally(SERVICES, USERS, reading).await;

    // Eight requests a second, never announced: some forty requests (sign-ins, one page of users
    // and four usage calls per service) take several windows.
    let (sim, ccc) = start_ccc_of(SERVICES, USERS, Duration::ZERO).await;
    sim.set_hidden_rate_limit(8, Duration::from_secs(1));
    let db = common::fresh_postgres().await;
    let (dir, config) = checkout_of(&ccc, &database_url(&db), SERVICES, reading);

    let first = worker(&config);
    let started = Instant::now();
    while sim.refused_429() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the first worker never met the limit"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The 429 is answered; the worker records the pace it revealed as it reads the answer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let requests_before = sim.requests();
    let late = [worker(&config), worker(&config)];

    let first = wait(first).await;
    assert_eq!(first.status.code(), Some(0), "{}", common::text(&first));
    let mut late_units = 0;
    for child in late {
        let output = wait(child).await;
        assert_eq!(output.status.code(), Some(0), "{}", common::text(&output));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        late_units += report["units_extracted"].as_u64().unwrap();
        assert_eq!(
            report["worker"]["sources"][0]["rate_limited"], 0,
            "a late worker met the limit itself: {report}"
        );
    }
    assert!(
        late_units >= 2,
        "the late workers extracted {late_units} of {SERVICES} services ({requests_before} of {} requests were made before they joined)",
        sim.requests()
    );
    assert_eq!(
        sim.refused_429(),
        1,
        "only the first worker met the limit; the others kept to the pace it revealed"
    );

    let mut received = file_lines(dir.path());
    received.sort();
    assert_eq!(
        received, expected,
        "every line once, as one tally alone bills them"
    );
}

#[tokio::test]
async fn starts_taken_at_once_are_a_pace_apart_and_a_faster_pace_never_speeds_the_round_up() {
    let store = tally::store::Store::connect(&common::fresh_postgres().await)
        .await
        .unwrap();
    let peer = "ccc.example:443";
    assert_eq!(
        store.take_pace_slot("night", peer).await.unwrap(),
        None,
        "unpaced until a worker meets the limit"
    );
    // A 429 revealed 300 ms between starts, its window reopening in 400 ms.
    store
        .share_pace(
            "night",
            peer,
            Duration::from_millis(300),
            Duration::from_millis(400),
        )
        .await
        .unwrap();
    let mut waits = Vec::new();
    for _ in 0..3 {
        let wait = store.take_pace_slot("night", peer).await.unwrap().unwrap();
        waits.push(wait.as_millis());
    }
    // 400, 700 and 1,000 ms from when the pace was shared, less the milliseconds spent asking.
    for (wait, due) in waits.iter().zip([400u128, 700, 1_000]) {
        assert!((due - 150..=due).contains(wait), "{waits:?}");
    }
    // Another worker learnt a faster pace and an earlier reopening: the slower and later stay.
    store
        .share_pace("night", peer, Duration::from_millis(10), Duration::ZERO)
        .await
        .unwrap();
    let next = store.take_pace_slot("night", peer).await.unwrap().unwrap();
    assert!((1_150..=1_300).contains(&next.as_millis()), "{next:?}");
    // The pace is the round's: another round, or another peer, is not paced by it.
    assert_eq!(
        store.take_pace_slot("other night", peer).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .take_pace_slot("night", "genesys.example:443")
            .await
            .unwrap(),
        None
    );
}
