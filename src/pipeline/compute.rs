//! Map and price: turns the summed usage of one source into priced invoice lines and
//! exceptions. Pure: everything it needs is passed in.

use crate::config::BillingSettings;
use crate::domain::{
    BillingAccount, Currency, Evidence, ExceptionKind, InvoiceLine, LicenseType, LineKey, Period,
    QuantityLimits, RunException, SourceName, UsageQuantity,
};
use crate::mapping::{CustomerMap, KeyMatch};
use crate::pricing::{PriceError, PricingTable};
use crate::sinks::Sink;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};

/// What one source's usage became.
#[derive(Debug, Default)]
pub struct Computed {
    pub lines: Vec<InvoiceLine>,
    pub exceptions: Vec<RunException>,
}

/// Everything pricing and mapping depend on, borrowed from the application.
pub struct Rules<'a> {
    pub customers: &'a CustomerMap,
    pub pricing: &'a PricingTable,
    pub billing: &'a BillingSettings,
    pub sinks: &'a [Sink],
    /// Accounts looked up in a billing system for this run.
    pub directory: &'a Directory,
}

/// What looking customers up in a billing system (ActivePlatform) found for one source's
/// usage, before mapping: the I/O happens before [`compute`], which stays pure.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    /// A customer-map account that names an account to look up (an e-mail address) → the
    /// account found, or why none could be chosen.
    pub aliases: HashMap<BillingAccount, Result<BillingAccount, String>>,
    /// A source customer key missing from the customer map → the account found by the key,
    /// or why none could be chosen.
    pub by_key: HashMap<String, Result<BillingAccount, String>>,
    /// The billing system and currency of every account found.
    pub routes: HashMap<BillingAccount, (String, Currency)>,
}

impl Directory {
    /// The billing account of a source customer: the customer map first (through an alias
    /// when it names an account to look up), then a lookup by the customer key.
    /// `Ok(None)`: neither knows it; `Err`: a lookup found no account or several.
    fn account_of(
        &self,
        customers: &CustomerMap,
        source: &SourceName,
        customer_key: &str,
        key_match: KeyMatch,
    ) -> Result<Option<BillingAccount>, String> {
        match customers.lookup(source.as_str(), customer_key, key_match) {
            Some(mapped) => match self.aliases.get(mapped) {
                Some(found) => found.clone().map(Some),
                None => Ok(Some(mapped.clone())),
            },
            None => match self.by_key.get(customer_key) {
                Some(found) => found.clone().map(Some),
                None => Ok(None),
            },
        }
    }

    /// The account's currency: as looked up, else its own in `billing.accounts`, else its
    /// billing system's (ActivePlatform has one), else `billing.default_currency`.
    fn currency_of(
        &self,
        billing: &BillingSettings,
        sinks: &[Sink],
        account: &BillingAccount,
    ) -> Option<Currency> {
        if let Some((_, currency)) = self.routes.get(account) {
            return Some(*currency);
        }
        let sink = self.sink_of(billing, account);
        let sink_currency = sinks
            .iter()
            .find(|s| s.name() == sink)
            .and_then(Sink::as_activeplatform)
            .map(|ap| ap.currency());
        billing
            .listed_currency(account.as_str())
            .or(sink_currency)
            .or_else(|| billing.currency_of(account))
    }

    fn sink_of<'a>(&'a self, billing: &'a BillingSettings, account: &BillingAccount) -> &'a str {
        match self.routes.get(account) {
            Some((sink, _)) => sink,
            None => billing.sink_of(account),
        }
    }
}

/// Maps each (customer key, item) to (billing account, license type), sums what lands on the
/// same line, prices each line, and checks it can go to its billing system. Whatever fails a
/// step becomes an exception carrying its quantity and record count.
pub fn compute(
    source: &SourceName,
    key_match: KeyMatch,
    license_of: &dyn Fn(&str) -> Option<LicenseType>,
    period: Period,
    mut usage: Vec<UsageQuantity>,
    rules: &Rules<'_>,
) -> Computed {
    let mut out = Computed::default();
    let exception = |kind,
                     u: &UsageQuantity,
                     account: Option<&BillingAccount>,
                     license: Option<&LicenseType>,
                     message: String| RunException {
        period,
        source: source.clone(),
        kind,
        customer_key: u.customer_key.clone(),
        item: u.item.clone(),
        billing_account: account.cloned(),
        license_type: license.cloned(),
        quantity: u.quantity,
        record_count: u.record_count,
        message,
    };

    // Several source customers (or items) may land on one line: sum before pricing, so that
    // tiers apply to the line's whole quantity.
    let mut grouped: BTreeMap<(BillingAccount, LicenseType), LineParts> = BTreeMap::new();
    for (at, u) in usage.iter().enumerate() {
        if let Some(problem) = &u.out_of_range {
            out.exceptions.push(exception(
                ExceptionKind::OutOfRange,
                u,
                None,
                None,
                format!(
                    "{source} customer {:?}, item {:?}: {problem}",
                    u.customer_key, u.item
                ),
            ));
            continue;
        }
        let account = match rules.directory.account_of(
            rules.customers,
            source,
            &u.customer_key,
            key_match,
        ) {
            Ok(Some(account)) => account,
            Ok(None) => {
                out.exceptions.push(exception(
                ExceptionKind::UnmappedCustomer,
                u,
                None,
                None,
                format!(
                    "{source} customer {:?} is not in the customer map; add a row `{source},{},<billing account>` to {}",
                    u.customer_key,
                    csv_cell(&u.customer_key),
                    rules.billing.customers_file.display()
                ),
            ));
                continue;
            }
            Err(message) => {
                out.exceptions.push(exception(
                    ExceptionKind::UnmappedCustomer,
                    u,
                    None,
                    None,
                    message,
                ));
                continue;
            }
        };
        let Some(license) = license_of(&u.item) else {
            out.exceptions.push(exception(
                ExceptionKind::UnmappedLicense,
                u,
                Some(&account),
                None,
                format!("{source} item {:?} maps to no license type; add it to the mapping rules of sources.{source}", u.item),
            ));
            continue;
        };
        let entry = grouped.entry((account.clone(), license)).or_default();
        // A sum that does not fit is caught below by `max_quantity_per_line`: saturate here.
        entry.0 = entry.0.saturating_add(u.quantity);
        entry.1 += u.record_count;
        entry.2.push(at);
    }

    // A line per group at most, sized once: grown by doubling, the lines held up to twice
    // their room at the run's peak.
    out.lines.reserve_exact(grouped.len());
    for ((account, license), (quantity, record_count, at)) in grouped {
        // The line's groups are taken out of `usage` and dropped with it: what the lines are
        // made of is freed as they are made, not held next to all of them.
        let parts: Vec<UsageQuantity> = at
            .iter()
            .map(|&at| std::mem::take(&mut usage[at]))
            .collect();
        if let Some(problem) = rules.billing.limits.check_line(quantity) {
            for u in &parts {
                out.exceptions.push(exception(
                    ExceptionKind::OutOfRange,
                    u,
                    Some(&account),
                    Some(&license),
                    format!(
                        "{source} customer {:?}, item {:?}: {problem}",
                        u.customer_key, u.item
                    ),
                ));
            }
            continue;
        }
        let Some(currency) = rules
            .directory
            .currency_of(rules.billing, rules.sinks, &account)
        else {
            // Unreachable after validation; kept as an exception rather than a panic.
            for u in &parts {
                out.exceptions.push(exception(
                    ExceptionKind::NoPrice,
                    u,
                    Some(&account),
                    Some(&license),
                    format!("billing account {account} has no valid currency"),
                ));
            }
            continue;
        };
        let priced = match rules.pricing.price(
            &license,
            &account,
            currency,
            period,
            quantity,
            rules.billing.rounding,
        ) {
            Ok(priced) => priced,
            Err(error) => {
                let kind = match error {
                    PriceError::NoPrice(_) => ExceptionKind::NoPrice,
                    PriceError::Overflow(_) => ExceptionKind::OutOfRange,
                };
                for u in &parts {
                    out.exceptions.push(exception(
                        kind,
                        u,
                        Some(&account),
                        Some(&license),
                        error.to_string(),
                    ));
                }
                continue;
            }
        };
        if !priced.billable {
            continue;
        }
        let sink_name = rules.directory.sink_of(rules.billing, &account).to_owned();
        let line = InvoiceLine {
            key: LineKey {
                period,
                billing_account: account.clone(),
                license_type: license.clone(),
                source: source.clone(),
            },
            quantity,
            rate: priced.rate,
            amount: priced.amount,
            currency,
            price_ref: priced.price_ref.clone(),
            trace: crate::domain::Trace::from_value(
                &serde_json::to_value(&priced.trace).unwrap_or(serde_json::Value::Null),
            ),
            evidence: Evidence {
                record_count,
                hash: combine_hashes(&parts.iter().map(|u| u.hash.as_str()).collect::<Vec<_>>()),
                sample: parts
                    .iter()
                    .flat_map(|u| {
                        u.sample
                            .iter()
                            .map(|key| format!("{key} ({}, {})", u.customer_key, u.item))
                    })
                    .take(Evidence::SAMPLE)
                    .collect(),
            },
            sink: sink_name.clone(),
        };
        let check = match rules.sinks.iter().find(|s| s.name() == sink_name) {
            Some(sink) => sink.check(&line),
            None => Err(format!("billing system {sink_name:?} is not configured")),
        };
        match check {
            Ok(()) => out.lines.push(line),
            Err(reason) => {
                for u in &parts {
                    out.exceptions.push(exception(
                        ExceptionKind::NotBillable,
                        u,
                        Some(&account),
                        Some(&license),
                        reason.clone(),
                    ));
                }
            }
        }
    }
    out
}

/// What is summed into one line: quantity, record count, and where its groups are in `usage`.
type LineParts = (Decimal, u64, Vec<usize>);

/// The fingerprint of several groups' records: XOR of their fingerprints, so that the order
/// records were read in does not matter.
pub fn combine_hashes(hashes: &[&str]) -> String {
    let mut acc = [0u8; 32];
    for h in hashes {
        if let Ok(bytes) = hex::decode(h) {
            for (a, b) in acc.iter_mut().zip(bytes) {
                *a ^= b;
            }
        }
    }
    hex::encode(acc)
}

/// The fingerprint of one record: SHA-256 of its key and quantity.
pub fn record_hash(record_key: &str, quantity: Decimal) -> [u8; 32] {
    use std::io::Write as _;
    let mut hasher = crate::domain::Sha256Writer::default();
    hasher.update(record_key.as_bytes());
    hasher.update(&[0x1f]);
    // The quantity's text goes into the hash as it is written (no string per record); writing
    // into a hasher cannot fail.
    let _ = write!(hasher, "{}", quantity.normalize());
    hasher.finish()
}

fn csv_cell(value: &str) -> String {
    if value.contains([',', '"', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// Sums staged records per (customer key, item), keeping their count and fingerprint. Memory
/// grows with the number of groups, not of records.
///
/// A record above `billing.limits.max_quantity_per_record`, or a sum that does not fit a
/// `Decimal`, marks its group out of range: the group becomes an exception naming the first
/// such record, never a line (a line without the record would bill a figure nobody checked).
#[derive(Debug, Default)]
pub struct Aggregator {
    limits: QuantityLimits,
    /// customer key → item → group. Nested so that adding a record looks its group up by
    /// borrowed keys and allocates only for a group's first record. Hashed, not ordered: a
    /// lookup per record in a tree of ten thousand customers was a tenth of a re-run's CPU
    /// (string comparisons); the groups are put in order once, by [`Aggregator::finish`].
    groups: HashMap<String, Items>,
}

/// One customer's groups, by item: a sorted list, not a map. A customer has a few items (the
/// licenses it uses), and a `BTreeMap` allocates a node of eleven slots for its first entry:
/// 1.7 KB per customer, 17 MB at ten thousand customers of one item each, where this takes
/// what its groups take.
#[derive(Debug, Default)]
struct Items(Vec<(String, Group)>);

impl Items {
    fn get_or_insert(&mut self, item: &str) -> &mut Group {
        let at = match self.0.binary_search_by(|(i, _)| i.as_str().cmp(item)) {
            Ok(at) => at,
            Err(at) => {
                // Room for the first few items one at a time: most customers have one or two,
                // and the vector's first growth makes room for four (300 bytes a customer
                // unused, 3 MB at ten thousand).
                if self.0.len() < 4 {
                    self.0.reserve_exact(1);
                }
                self.0.insert(at, (item.to_owned(), Group::default()));
                at
            }
        };
        &mut self.0[at].1
    }
}

#[derive(Debug, Default)]
struct Group {
    quantity: Decimal,
    records: u64,
    hash: [u8; 32],
    /// Why the group cannot be billed as it is, with the record key it was found at. Of several
    /// problems the one at the smallest key is kept, so that the message is the same in
    /// whatever order the records are read. Boxed: it is rare, and every group carries it.
    out_of_range: Option<Box<(String, String)>>,
    /// The smallest record keys seen, sorted, at most `Evidence::SAMPLE`: the same records give
    /// the same sample in whatever order they are read.
    sample: Vec<String>,
}

impl Group {
    fn out_of_range(&mut self, record_key: &str, problem: String) {
        if self
            .out_of_range
            .as_ref()
            .is_none_or(|found| record_key < found.0.as_str())
        {
            self.out_of_range = Some(Box::new((record_key.to_owned(), problem)));
        }
    }
}

impl Aggregator {
    pub fn new(limits: &QuantityLimits) -> Self {
        Aggregator {
            limits: limits.clone(),
            groups: HashMap::new(),
        }
    }

    /// Adds one staged record (key, customer, item, quantity) to its group.
    pub fn add(&mut self, record_key: &str, customer_key: &str, item: &str, quantity: Decimal) {
        let items = match self.groups.get_mut(customer_key) {
            Some(items) => items,
            None => self.groups.entry(customer_key.to_owned()).or_default(),
        };
        let group = items.get_or_insert(item);
        group.records += 1;
        let keep = group.sample.len() < Evidence::SAMPLE
            || group
                .sample
                .last()
                .is_some_and(|last| record_key < last.as_str());
        if keep
            && let Err(at) = group
                .sample
                .binary_search_by(|k| k.as_str().cmp(record_key))
        {
            group.sample.insert(at, record_key.to_owned());
            group.sample.truncate(Evidence::SAMPLE);
        }
        for (a, b) in group.hash.iter_mut().zip(record_hash(record_key, quantity)) {
            *a ^= b;
        }
        let problem = self.limits.check_record(record_key, quantity).or_else(|| {
            match group.quantity.checked_add(quantity) {
                Some(sum) => {
                    group.quantity = sum;
                    None
                }
                None => Some(format!(
                    "adding record {record_key:?} ({quantity}) makes a sum too large to compute; check the source"
                )),
            }
        });
        if let Some(problem) = problem {
            group.out_of_range(record_key, problem);
        }
    }

    /// Adds another aggregator's groups (of other records: another scope's) to these.
    pub fn merge(&mut self, other: Aggregator) {
        for (customer_key, items) in other.groups {
            let mine = self.groups.entry(customer_key).or_default();
            for (item, theirs) in items.0 {
                let group = mine.get_or_insert(&item);
                group.records += theirs.records;
                for (a, b) in group.hash.iter_mut().zip(theirs.hash) {
                    *a ^= b;
                }
                for key in theirs.sample {
                    if let Err(at) = group.sample.binary_search(&key) {
                        group.sample.insert(at, key);
                    }
                }
                group.sample.truncate(Evidence::SAMPLE);
                if let Some(found) = theirs.out_of_range {
                    let (key, problem) = *found;
                    group.out_of_range(&key, problem);
                }
                match group.quantity.checked_add(theirs.quantity) {
                    Some(sum) => group.quantity = sum,
                    None => group.out_of_range(
                        "",
                        format!(
                            "adding the records of two scopes ({} and {}) makes a sum too large to compute; check the source",
                            group.quantity, theirs.quantity
                        ),
                    ),
                }
            }
        }
    }

    pub fn records(&self) -> u64 {
        self.groups
            .values()
            .flat_map(|items| items.0.iter())
            .map(|(_, g)| g.records)
            .sum()
    }

    /// The groups, ordered by (customer key, item).
    pub fn finish(self) -> Vec<UsageQuantity> {
        let mut customers: Vec<(String, Items)> = self.groups.into_iter().collect();
        customers.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut usage = Vec::with_capacity(customers.iter().map(|(_, items)| items.0.len()).sum());
        for (customer_key, items) in customers {
            usage.extend(items.0.into_iter().map(|(item, group)| UsageQuantity {
                customer_key: customer_key.clone(),
                item,
                quantity: group.quantity,
                record_count: group.records,
                hash: hex::encode(group.hash),
                out_of_range: group.out_of_range.map(|found| found.1),
                sample: group.sample,
            }));
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn groups(keys: &[&str]) -> Vec<UsageQuantity> {
        let mut aggregator = Aggregator::new(&QuantityLimits::default());
        for key in keys {
            aggregator.add(key, "Acme", "agent", dec!(1));
        }
        aggregator.finish()
    }

    #[test]
    fn a_records_fingerprint_is_the_sha256_of_its_key_and_normalized_quantity() {
        // Stored in the ledger's evidence: the same records must hash as they always did.
        assert_eq!(
            hex::encode(record_hash("42@Acme", dec!(1.50))),
            "1f2a16213eea7cc63b21d7d91eb56ca73aaf0693c1471fbde3633012de08701e"
        );
        assert_eq!(
            hex::encode(record_hash("42@Acme", dec!(1))),
            "b833ae57661921b36780ed38b44279318ff4e64b1394b5e239ec9884843aaed3"
        );
    }

    #[test]
    fn a_groups_sample_is_its_smallest_record_keys_whatever_the_reading_order() {
        let keys = [
            "7@Acme", "3@Acme", "9@Acme", "1@Acme", "5@Acme", "2@Acme", "8@Acme",
        ];
        let mut reversed = keys;
        reversed.reverse();
        let forward = groups(&keys);
        let backward = groups(&reversed);
        assert_eq!(forward[0].record_count, 7);
        assert_eq!(
            forward[0].sample,
            ["1@Acme", "2@Acme", "3@Acme", "5@Acme", "7@Acme"]
        );
        assert_eq!(forward[0].sample, backward[0].sample);
        // A record read twice is one key in the sample.
        assert_eq!(groups(&["4@Acme", "4@Acme"])[0].sample, ["4@Acme"]);
    }

    #[test]
    fn groups_come_out_by_customer_then_item_and_merge_by_item() {
        let mut one = Aggregator::new(&QuantityLimits::default());
        for (key, customer, item) in [
            ("1", "Beta", "viewer"),
            ("2", "Acme", "viewer"),
            ("3", "Acme", "agent"),
            ("4", "Acme", "viewer"),
            ("5", "Acme", "supervisor"),
        ] {
            one.add(key, customer, item, dec!(1));
        }
        let mut other = Aggregator::new(&QuantityLimits::default());
        other.add("6", "Acme", "agent", dec!(2.5));
        other.add("7", "Beta", "admin", dec!(1));
        one.merge(other);
        let got: Vec<(String, String, Decimal, u64)> = one
            .finish()
            .into_iter()
            .map(|u| (u.customer_key, u.item, u.quantity, u.record_count))
            .collect();
        let want = [
            ("Acme", "agent", dec!(3.5), 2),
            ("Acme", "supervisor", dec!(1), 1),
            ("Acme", "viewer", dec!(2), 2),
            ("Beta", "admin", dec!(1), 1),
            ("Beta", "viewer", dec!(1), 1),
        ];
        let want: Vec<(String, String, Decimal, u64)> = want
            .into_iter()
            .map(|(c, i, q, n)| (c.to_owned(), i.to_owned(), q, n))
            .collect();
        assert_eq!(got, want);
    }
}
