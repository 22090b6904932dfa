//! cargo-fuzz target: the `config_toml` parser of tests/it/parsers.rs must never panic.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/it/parsers.rs"]
mod parsers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| parsers::run("config_toml", data));
