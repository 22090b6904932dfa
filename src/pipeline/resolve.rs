//! Looks customers up in the billing system that can find accounts itself (ActivePlatform),
//! before the pure map-and-price stage. Two cases reach it:
//!
//! - a customer-map row whose billing account is an e-mail address billed in ActivePlatform
//!   (`acme-billing@example.com`): the account holding that e-mail is looked up;
//! - a customer of a source listed in `sinks.activeplatform.lookup_sources` that is not in the
//!   customer map: the account whose custom attribute `lookup_attribute` holds the customer key
//!   is looked up.
//!
//! An account found is billed in ActivePlatform under its id, in the currency
//! `billing.accounts` gives it (by its id, else by its e-mail address), else in ActivePlatform's
//! (`sinks.activeplatform.currency`). None, or several, make the customer's usage an exception
//! naming the candidates.

use super::App;
use super::compute::Directory;
use crate::domain::{BillingAccount, UsageQuantity};
use crate::sinks::activeplatform::{AccountKey, ActivePlatform, LookupError};
use crate::sources::Source;
use anyhow::Context as _;

/// The billing system name lines of looked-up accounts carry.
const SINK: &str = "activeplatform";

/// The accounts a source's usage needs looked up, found. An `Err` means ActivePlatform could
/// not be asked (it is down, or refused tally): the source fails for this run rather than
/// bill its customers as unknown.
#[tracing::instrument(name = "resolve", skip_all, fields(source = %source.name()))]
pub async fn resolve(
    app: &App,
    source: &Source,
    usage: &[UsageQuantity],
) -> anyhow::Result<Directory> {
    let mut directory = Directory::default();
    let Some(ap) = app.sinks.iter().find_map(|s| s.as_activeplatform()) else {
        return Ok(directory);
    };
    let name = source.name().as_str();
    for u in usage {
        match app
            .customers
            .lookup(name, &u.customer_key, source.key_match())
        {
            Some(mapped) => {
                if directory.aliases.contains_key(mapped) || !is_email_alias(app, mapped) {
                    continue;
                }
                let key = AccountKey::Email(mapped.as_str().trim().to_owned());
                let found = find(ap, &key, &mut directory, app, Some(mapped)).await?;
                directory.aliases.insert(mapped.clone(), found);
            }
            None if ap.looks_up(name) => {
                if directory.by_key.contains_key(&u.customer_key) {
                    continue;
                }
                let key = ap.attribute_key(&u.customer_key);
                let found = find(ap, &key, &mut directory, app, None).await?;
                directory.by_key.insert(u.customer_key.clone(), found);
            }
            None => {}
        }
    }
    Ok(directory)
}

/// A customer-map account that names an ActivePlatform account by its e-mail address.
fn is_email_alias(app: &App, account: &BillingAccount) -> bool {
    account.as_str().contains('@') && app.settings.billing.sink_of(account) == SINK
}

/// One lookup: `Ok(Ok(account))` found (and routed), `Ok(Err(message))` none or several,
/// `Err` ActivePlatform could not be asked.
async fn find(
    ap: &ActivePlatform,
    key: &AccountKey,
    directory: &mut Directory,
    app: &App,
    alias: Option<&BillingAccount>,
) -> anyhow::Result<Result<BillingAccount, String>> {
    match ap.find_account(key).await {
        Ok(account) => {
            let id = BillingAccount::new(account.id.clone());
            // The account's own entry is the most precise; then its e-mail: the address the
            // customer map named it by, or the contact e-mail ActivePlatform holds for it.
            let billing = &app.settings.billing;
            let currency = billing
                .listed_currency(&account.id)
                .or_else(|| alias.and_then(|a| billing.listed_currency(a.as_str())))
                .or_else(|| billing.listed_currency(&account.email))
                .unwrap_or(ap.currency());
            directory
                .routes
                .insert(id.clone(), (SINK.to_owned(), currency));
            Ok(Ok(id))
        }
        Err(LookupError::Failed(e)) => {
            Err(e).with_context(|| format!("looking up {key} in ActivePlatform"))
        }
        Err(refusal) => Ok(Err(refusal.to_string())),
    }
}
