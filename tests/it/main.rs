//! The integration tests, in one binary (one link instead of one per file): each module is an
//! area, run against real databases (Postgres from `DATABASE_URL`, SQLite files), the
//! simulators, and the real `tally` binary where a behaviour crosses processes.

mod common;

mod activeplatform;
mod architecture;
mod billable_users;
mod billable_users_csv;
mod browser;
mod ccc;
mod check_config;
mod cli;
mod concurrent_fetch;
mod daemon;
mod deploy;
mod export;
mod file_sink;
mod file_sink_batch;
mod fuzz;
mod genesys;
mod guards;
mod http_peers;
mod multi_source;
mod notify;
mod operations;
mod output;
mod parsers;
mod peer_paging;
mod pipeline;
mod push_side_by_side;
mod rambase;
mod run_history;
mod store;
mod web;
mod worker_pace;
mod workers;
