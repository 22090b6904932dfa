//! What an operator sees of tally besides its results: the logs (their filter, format and
//! colour, and the run summary as separate fields), the progress of a manual run in a terminal,
//! the terminal's width that tables are fitted to, and a quiet end when the reader of the output
//! goes away (`tally lines | head -1`).
//!
//! One room for it so that every command looks and behaves the same way, and so that the
//! pipeline can report progress without knowing who draws it. It imports only `config` (the
//! `[log]` settings) and `domain` (the run summary).

pub mod logging;
pub mod memory;
pub mod pipe;
pub mod progress;
pub mod summary;
pub mod terminal;

pub use logging::{init_logging, set_format_override};
pub use progress::{Progress, Snapshot, with_progress_bar};
pub use summary::log_summary;
