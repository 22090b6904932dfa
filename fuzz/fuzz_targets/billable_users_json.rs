//! cargo-fuzz target: the `billable_users_json` parser of tests/it/parsers.rs must never panic.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/it/parsers.rs"]
mod parsers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| parsers::run("billable_users_json", data));
