//! Plain types that flow between the stages: periods, ids, money, records, lines and runs.
//!
//! Nothing here does I/O. Every stage (extract, map, price, reconcile, push) speaks these types.

mod digest;
mod exception;
mod ids;
mod limits;
mod line;
mod money;
mod period;
mod record;
mod run;
mod sample;
mod trace;

pub use digest::Sha256Writer;
pub use exception::{ExceptionKind, RunException};
pub use ids::{BillingAccount, LicenseType, SourceName};
pub use limits::QuantityLimits;
pub use line::{
    Approval, Evidence, InvoiceLine, LedgerChange, LedgerLine, LineKey, LineStatus, NewRevision,
    REVERSAL_REASON,
};
pub use money::{Currency, RoundingMode, UnknownCurrency, checked_sum};
pub use period::{Period, PeriodError};
pub use record::{StagedQuantity, StagedRecord, UsageQuantity};
pub use run::{RunStatus, RunSummary, SourceFailure, SourceStats, Trigger};
pub use sample::Sample;
pub use trace::Trace;
