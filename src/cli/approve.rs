//! `tally approve` and `tally push`. Approving is a ledger operation: it needs the database
//! only. Pushing what was approved needs the secrets of the billing systems those lines go to,
//! and no others. Both go through `pipeline::approve`, as the review page's buttons do.

use super::{Load, exit, init_tracing, listen_for_signals, writer_lease};
use crate::config::Settings;
use crate::domain::{BillingAccount, Period};
use crate::pipeline::PushOutcome;
use crate::pipeline::approve::{self, ApprovalScope};
use crate::shutdown::Shutdown;
use crate::store::{PushScope, Store};

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The billing period, YYYY-MM.
    #[arg(long, value_name = "YYYY-MM")]
    pub period: Period,
    /// Only this billing account.
    #[arg(long, value_name = "ID")]
    pub customer: Option<String>,
    /// Approve only; push later with `tally push`.
    #[arg(long)]
    pub no_push: bool,
    /// Who approves, as recorded on the lines (default: $TALLY_APPROVER, else $USER).
    #[arg(long, value_name = "NAME", env = "TALLY_APPROVER")]
    pub by: Option<String>,
    /// Why, recorded with the approval.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    /// If another tally is writing the ledger, wait this many seconds for it (then exit 4).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub wait: u64,
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The billing period, YYYY-MM.
    #[arg(long, value_name = "YYYY-MM")]
    pub period: Period,
    /// Only this billing account.
    #[arg(long, value_name = "ID")]
    pub customer: Option<String>,
    /// If another tally is writing the ledger, wait this many seconds for it (then exit 4).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub wait: u64,
}

/// `tally approve`: approves the drafts asked for, then pushes exactly those (unless
/// `--no-push`).
pub async fn approve(args: ApproveArgs, load: Load<'_>) -> anyhow::Result<i32> {
    let settings = load()?;
    init_tracing(&settings, None);
    let store = Store::connect(&settings.database_target()).await?;
    let _lease = writer_lease(&store, "approve", args.wait).await?;
    let shutdown = Shutdown::new();
    listen_for_signals(&settings, &shutdown);
    let by = args.by.clone().unwrap_or_else(default_approver);
    let customer = args.customer.as_deref().map(BillingAccount::from);
    let scope = match &customer {
        Some(c) => ApprovalScope::Customer(c),
        None => ApprovalScope::Period,
    };
    let approved =
        approve::approve_drafts(&store, args.period, scope, &by, args.note.as_deref()).await?;
    println!(
        "approved {} draft line(s) of {}{} as {by}",
        approved.len(),
        args.period,
        customer
            .as_ref()
            .map(|c| format!(" for {c}"))
            .unwrap_or_default()
    );
    if args.no_push || approved.is_empty() {
        if !approved.is_empty() {
            println!(
                "not pushed (--no-push): push them with `tally push --period {}`",
                args.period
            );
        }
        return Ok(exit::OK);
    }
    let scope = PushScope {
        ids: Some(&approved),
        ..PushScope::default()
    };
    let outcome = push_command(&settings, &store, &shutdown, args.period, &scope).await?;
    Ok(push_exit_code(&outcome))
}

/// `tally push`: pushes the period's approved lines (of one customer, if given).
pub async fn push(args: PushArgs, load: Load<'_>) -> anyhow::Result<i32> {
    let settings = load()?;
    init_tracing(&settings, None);
    let store = Store::connect(&settings.database_target()).await?;
    let _lease = writer_lease(&store, "push", args.wait).await?;
    let shutdown = Shutdown::new();
    listen_for_signals(&settings, &shutdown);
    let customer = args.customer.as_deref().map(BillingAccount::from);
    let scope = PushScope {
        customer: customer.as_ref(),
        ..PushScope::default()
    };
    let outcome = push_command(&settings, &store, &shutdown, args.period, &scope).await?;
    Ok(push_exit_code(&outcome))
}

/// Who approves when `--by` is not given: the login name, so that an approval is never anonymous.
fn default_approver() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Pushes the period's approved lines within `scope`, building only the billing systems they go
/// to, and prints what happened.
async fn push_command(
    settings: &Settings,
    store: &Store,
    shutdown: &Shutdown,
    period: Period,
    scope: &PushScope<'_>,
) -> anyhow::Result<PushOutcome> {
    let outcome = approve::push_approved(settings, store, shutdown, period, scope).await?;
    println!("pushed {} line(s)", outcome.pushed);
    for e in &outcome.errors {
        println!("push error: {e}");
    }
    if outcome.interrupted {
        println!(
            "interrupted: the lines not reached stay approved; run `tally push --period {period}` again"
        );
    }
    Ok(outcome)
}

fn push_exit_code(outcome: &PushOutcome) -> i32 {
    if outcome.interrupted {
        exit::INTERRUPTED
    } else if outcome.errors.is_empty() && outcome.waiting == 0 {
        exit::OK
    } else {
        exit::FAILED
    }
}
