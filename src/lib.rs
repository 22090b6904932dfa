//! tally: turns usage in SaaS systems into invoice lines in a billing system.
//!
//! The flow (README.md, docs/LEDGER.md): sources ─extract→ staged records ─map→ quantities ─price→ invoice
//! lines ─reconcile→ ledger ─push→ billing systems. Extraction and pushing do I/O; mapping,
//! pricing and reconciling are pure functions over the types in [`domain`].

pub mod cli;
pub mod config;
pub mod domain;
pub mod export;
pub mod http;
pub mod mapping;
pub mod notify;
pub mod observe;
pub mod pipeline;
pub mod pricing;
pub mod problem;
pub mod reconcile;
pub mod schedule;
pub mod shutdown;
pub mod sim;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod web;
