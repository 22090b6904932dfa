//! `--customer`: which billing accounts a run (or `tally lines`) is limited to.
//!
//! An operator names a customer the way the customer map writes it: its billing account
//! (`ACME-001`, compared without regard to case, as people type it), or a source's customer key
//! (`Acme Corporation`, a CCC service GUID), compared as that source compares its keys (names
//! exactly, GUIDs in any case and spelling). A name that is in no customer-map row and on no
//! ledger line is refused before anything runs, with the nearest names, rather than running a
//! month for nobody.

use super::compute::Directory;
use super::{App, PushOutcome, UsageError};
use crate::domain::{BillingAccount, Period, RunException, SourceName};
use crate::mapping::{self, CustomerMap, KeyMatch};
use crate::store::PushScope;
use std::collections::BTreeSet;

/// The accounts a `--customer` stands for.
#[derive(Debug, Clone)]
pub struct CustomerFilter {
    /// As the operator gave it (trimmed).
    asked: String,
    /// The accounts selected, lower-cased.
    accounts: BTreeSet<String>,
}

impl CustomerFilter {
    /// The accounts `asked` names in the customer map and among `ledger_accounts`, or a
    /// [`UsageError`] naming the nearest names when it names none.
    pub fn resolve(
        customers: &CustomerMap,
        ledger_accounts: &[String],
        asked: &str,
    ) -> Result<CustomerFilter, UsageError> {
        let asked = asked.trim().to_owned();
        let mut filter = CustomerFilter {
            asked: asked.clone(),
            accounts: BTreeSet::new(),
        };
        let known: BTreeSet<&str> = customers
            .accounts()
            .map(|a| a.as_str())
            .chain(ledger_accounts.iter().map(String::as_str))
            .collect();
        for account in &known {
            if account.eq_ignore_ascii_case(&asked) {
                filter.accounts.insert(account.to_lowercase());
            }
        }
        for (source, form) in mapping::SOURCES {
            if let Some(account) = customers.lookup(source, &asked, form.key_match()) {
                filter.accounts.insert(account.as_str().to_lowercase());
            }
        }
        if filter.accounts.is_empty() {
            let nearest = nearest(&asked, &known);
            let hint = if nearest.is_empty() {
                "the customer map names no account and the ledger holds no line".to_owned()
            } else {
                format!("the nearest: {}", nearest.join(", "))
            };
            return Err(UsageError(format!(
                "--customer {asked:?} is in no row of the customer map and on no ledger line \
                 (a billing account, or a source's customer key as the customer map writes it); \
                 {hint}"
            )));
        }
        Ok(filter)
    }

    /// [`Self::resolve`] against the app's customer map and the store's ledger.
    pub async fn for_app(app: &App, asked: &str) -> anyhow::Result<CustomerFilter> {
        let ledger = app.store.ledger_accounts().await?;
        Ok(Self::resolve(&app.customers, &ledger, asked)?)
    }

    /// The `--customer` as given.
    pub fn asked(&self) -> &str {
        &self.asked
    }

    pub fn matches_account(&self, account: &BillingAccount) -> bool {
        self.accounts.contains(&account.as_str().to_lowercase())
    }

    /// Adds the accounts a billing system's lookups found for the selected accounts (an
    /// e-mail address in the map) or for the customer key asked for.
    pub fn add_found(&mut self, directory: &Directory, key_match: KeyMatch) {
        let mut found = Vec::new();
        for (alias, account) in &directory.aliases {
            if let Ok(account) = account
                && self.matches_account(alias)
            {
                found.push(account.as_str().to_lowercase());
            }
        }
        for (key, account) in &directory.by_key {
            if let Ok(account) = account
                && self.is_key(key, key_match)
            {
                found.push(account.as_str().to_lowercase());
            }
        }
        self.accounts.extend(found);
    }

    /// An exception of the customer: on one of its accounts, or of the key asked for.
    pub fn matches_exception(&self, exception: &RunException, key_match: KeyMatch) -> bool {
        exception
            .billing_account
            .as_ref()
            .is_some_and(|a| self.matches_account(a))
            || self.is_key(&exception.customer_key, key_match)
    }

    fn is_key(&self, key: &str, key_match: KeyMatch) -> bool {
        mapping::canonical_key(key_match, key) == mapping::canonical_key(key_match, &self.asked)
    }
}

/// The exceptions of the period a run limited to one customer must keep: the other customers'
/// of the sources it completed (recording a plan replaces a source's exceptions of the period).
pub(super) async fn others_exceptions(
    app: &App,
    period: Period,
    completed: &[SourceName],
    customer: Option<&CustomerFilter>,
) -> anyhow::Result<Vec<RunException>> {
    let Some(customer) = customer else {
        return Ok(Vec::new());
    };
    let key_match = |name: &SourceName| {
        app.sources
            .iter()
            .find(|s| s.name() == name)
            .map_or(crate::mapping::KeyMatch::Exact, |s| s.key_match())
    };
    Ok(app
        .store
        .exceptions(period)
        .await?
        .into_iter()
        .filter(|e| {
            completed.contains(&e.source) && !customer.matches_exception(e, key_match(&e.source))
        })
        .collect())
}

/// Pushes the approved lines of the customer's accounts, one account at a time.
pub(super) async fn push_customer(
    app: &App,
    period: Period,
    completed: &[SourceName],
    customer: &CustomerFilter,
) -> anyhow::Result<PushOutcome> {
    let accounts: std::collections::BTreeSet<_> = app
        .store
        .ledger_lines(period, None)
        .await?
        .into_iter()
        .filter(|l| customer.matches_account(&l.key.billing_account))
        .map(|l| l.key.billing_account)
        .collect();
    let mut total = PushOutcome::default();
    for account in &accounts {
        let scope = PushScope {
            sources: Some(completed),
            customer: Some(account),
            ..PushScope::default()
        };
        let outcome = app.pusher().push_period(period, &scope).await?;
        total.pushed += outcome.pushed;
        total.errors.extend(outcome.errors);
        total.waiting += outcome.waiting;
        total.interrupted |= outcome.interrupted;
        if total.interrupted {
            break;
        }
    }
    Ok(total)
}

/// Up to three of `known`, the closest to `asked` first (edit distance, ignoring case).
fn nearest(asked: &str, known: &BTreeSet<&str>) -> Vec<String> {
    let asked = asked.to_lowercase();
    let mut scored: Vec<(usize, &str)> = known
        .iter()
        .map(|k| (distance(&asked, &k.to_lowercase()), *k))
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(3)
        .map(|(_, k)| k.to_owned())
        .collect()
}

/// Levenshtein distance, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> CustomerMap {
        CustomerMap::from_reader(
            "customers.csv",
            "source,source_customer,billing_account\n\
             billable_users,Acme Corporation,ACME-001\n\
             ccc,a1c3e5f7-0b2d-4e6f-8a1c-3e5f7a9b0001,billing@acme.example\n\
             billable_users,Initech,INITECH-003\n"
                .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn an_account_matches_in_any_case_and_a_key_as_its_source_compares_it() {
        let f = CustomerFilter::resolve(&map(), &[], "acme-001").unwrap();
        assert!(f.matches_account(&BillingAccount::new("ACME-001")));
        assert!(!f.matches_account(&BillingAccount::new("INITECH-003")));
        let f = CustomerFilter::resolve(&map(), &[], "Acme Corporation").unwrap();
        assert!(f.matches_account(&BillingAccount::new("ACME-001")));
        // Organization names compare exactly, as the source's keys do.
        assert!(CustomerFilter::resolve(&map(), &[], "acme corporation").is_err());
        let f =
            CustomerFilter::resolve(&map(), &[], "{A1C3E5F7-0B2D-4E6F-8A1C-3E5F7A9B0001}").unwrap();
        assert!(f.matches_account(&BillingAccount::new("billing@acme.example")));
        let f = CustomerFilter::resolve(&map(), &["2000041".into()], "2000041").unwrap();
        assert!(f.matches_account(&BillingAccount::new("2000041")));
    }

    #[test]
    fn an_unknown_customer_names_the_nearest() {
        let e = CustomerFilter::resolve(&map(), &[], "ACME-01").unwrap_err();
        assert!(e.0.contains("\"ACME-01\""), "{e}");
        assert!(e.0.contains("the nearest: ACME-001"), "{e}");
    }
}
