//! Reading and validating the pricing CSV (docs/PRICING.md "Columns" and "Validation"); one row's
//! cells are parsed in `cells`.
//!
//! Three passes, each reporting every problem it finds: cells of each row, then the rows of
//! each price (agreement, tiers), then the prices against each other (overlaps in force). A
//! price whose rows have a bad cell is left out of the later passes, so that one typo gives one
//! problem and not a cascade.

use super::{Price, Tier};
use crate::domain::{BillingAccount, Currency};
use crate::problem::Problem;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet};

use super::cells::*;

/// Reads, validates and builds the prices; `name` is used in problems.
pub(super) fn parse<R: std::io::Read>(name: &str, reader: R) -> Result<Vec<Price>, Vec<Problem>> {
    let mut problems = Problems::new(name, &COLUMNS);
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);

    let mut records = csv.records();
    match records.next() {
        None => {
            problems.at(
                1,
                PRICE_ID,
                format!(
                    "the pricing table is empty: expected the header {}",
                    COLUMNS.join(",")
                ),
            );
            return Err(problems.into_sorted());
        }
        Some(Err(e)) => {
            problems.unreadable(1, &e);
            return Err(problems.into_sorted());
        }
        Some(Ok(header)) => {
            if !problems.header(&header) {
                return Err(problems.into_sorted());
            }
        }
    }

    // Pass 1: cells.
    let mut rows = Vec::new();
    // Versions with a bad row: left out of the later passes.
    let mut broken: BTreeSet<VersionKey> = BTreeSet::new();
    let mut broken_ids: BTreeSet<String> = BTreeSet::new();
    for (index, record) in records.enumerate() {
        let row = index + 2;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                problems.unreadable(row, &e);
                continue;
            }
        };
        let cells: Vec<String> = record.iter().map(str::to_owned).collect();
        if cells.iter().all(String::is_empty) {
            // Spreadsheets save blank rows as a line of commas; they mean nothing.
            continue;
        }
        if cells.len() != COLUMNS.len() {
            // Name the first column that is missing, or the last one when there are too many.
            let column = cells.len().min(COLUMNS.len() - 1);
            problems.at(
                row,
                column,
                format!(
                    "this row has {} cells, the header has {}: check for a stray or missing comma \
                     (a decimal comma such as 12,50 must be written 12.50, or quoted)",
                    cells.len(),
                    COLUMNS.len()
                ),
            );
            // Its price cannot be checked without this row.
            broken_ids.insert(cells[0].clone());
            continue;
        }
        match parse_row(row, cells, &mut problems) {
            Ok(r) => rows.push(r),
            Err(key) => {
                broken.insert(key);
            }
        }
    }

    // Pass 2: the rows of each version.
    let mut versions: BTreeMap<VersionKey, Vec<Row>> = BTreeMap::new();
    for r in rows {
        versions.entry(version_key(&r.cells)).or_default().push(r);
    }
    versions.retain(|key, _| !broken.contains(key) && !broken_ids.contains(&key.0));
    check_identity_across_versions(&versions, &mut problems);
    let mut prices = Vec::new();
    for rows in versions.values_mut() {
        rows.sort_by_key(|r| r.row);
        if let Some(price) = build_version(rows, &mut problems) {
            prices.push((rows[0].row, price));
        }
    }

    // Pass 3: prices against each other.
    check_overlaps(&prices, &mut problems);

    if problems.is_empty() {
        // Keep the file's order: it is what the accountant sees.
        prices.sort_by_key(|(row, _)| *row);
        Ok(prices.into_iter().map(|(_, p)| p).collect())
    } else {
        Err(problems.into_sorted())
    }
}

fn check_identity_across_versions(
    versions: &BTreeMap<VersionKey, Vec<Row>>,
    problems: &mut Problems<'_>,
) {
    let mut first_of_id: BTreeMap<&str, &Row> = BTreeMap::new();
    let mut all: Vec<&Row> = versions.values().flatten().collect();
    all.sort_by_key(|r| r.row);
    for r in all {
        let Some(first) = first_of_id.get(r.price_id.as_str()).copied() else {
            first_of_id.insert(&r.price_id, r);
            continue;
        };
        if version_key(&first.cells) == version_key(&r.cells) {
            continue; // Same version: checked with the other version columns.
        }
        for &c in &IDENTITY_COLUMNS {
            if comparable(c, &first.cells[c]) != comparable(c, &r.cells[c]) {
                problems.at(
                    r.row,
                    c,
                    format!(
                        "{} is {:?} but row {} of price {:?} has {:?}: a price_id names one price; \
                         its versions (effective dates) may change amounts, not {}",
                        COLUMNS[c], r.cells[c], first.row, r.price_id, first.cells[c], COLUMNS[c]
                    ),
                );
            }
        }
    }
}

/// Checks the rows of one version (sorted by row) and builds the price.
fn build_version(rows: &[Row], problems: &mut Problems<'_>) -> Option<Price> {
    let first = rows.first()?;
    let before = problems.count();
    for r in &rows[1..] {
        for &c in &VERSION_COLUMNS {
            if comparable(c, &first.cells[c]) != comparable(c, &r.cells[c]) {
                problems.at(
                    r.row,
                    c,
                    format!(
                        "{} is {:?} but row {} of the same price {:?} has {:?}: only the tier \
                         columns may differ between the rows of one price",
                        COLUMNS[c], r.cells[c], first.row, r.price_id, first.cells[c]
                    ),
                );
            }
        }
    }
    if problems.count() > before {
        return None;
    }

    let model = first.model;
    let tiers = if model.is_tiered() {
        check_tiers(rows, problems)?
    } else {
        for r in &rows[1..] {
            problems.at(
                r.row,
                PRICE_ID,
                format!(
                    "price {:?} (model {model}) already has row {} for the same effective dates: \
                     only graduated and volume prices have several rows (tiers); give this row \
                     another price_id or other effective dates",
                    r.price_id, first.row
                ),
            );
        }
        if rows.len() > 1 {
            return None;
        }
        vec![Tier {
            from: Decimal::ZERO,
            to: None,
            unit_price: first.unit_price.unwrap_or(Decimal::ZERO),
            flat_fee: first.flat_fee,
        }]
    };

    Some(Price {
        price_id: first.price_id.clone(),
        license_type: first.license_type.clone(),
        customer: first.customer.clone(),
        currency: first.currency,
        model,
        tiers,
        package_size: first.package_size,
        included_quantity: first.included_quantity.unwrap_or(Decimal::ZERO),
        min_charge: first.min_charge,
        effective_from: first.effective_from,
        effective_to: first.effective_to,
    })
}

/// Tiers sorted by `tier_from`: the first from 0 or 1, each next one starting right after the
/// previous `tier_to`, the last one (and only it) unbounded.
fn check_tiers(rows: &[Row], problems: &mut Problems<'_>) -> Option<Vec<Tier>> {
    let before = problems.count();
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by_key(|r| (r.tier_from, r.row));
    let describe = |r: &Row| {
        format!(
            "row {} ({}..{})",
            r.row,
            r.cells[TIER_FROM],
            if r.cells[TIER_TO].is_empty() {
                "unbounded"
            } else {
                &r.cells[TIER_TO]
            }
        )
    };
    let id = &rows[0].price_id;
    let mut previous: Option<&Row> = None;
    for r in &sorted {
        // Checked in parse_row: tiered rows have a tier_from.
        let from = r.tier_from.unwrap_or(Decimal::ZERO);
        match previous {
            None => {
                if from != Decimal::ZERO && from != Decimal::ONE {
                    problems.at(
                        r.row,
                        TIER_FROM,
                        format!("the first tier of price {id:?} starts at {from}: it must start at 0 or 1"),
                    );
                }
            }
            Some(p) => match p.tier_to {
                None => problems.at(
                    r.row,
                    TIER_FROM,
                    format!(
                        "tiers of price {id:?} overlap: this tier starts at {from} but the tier on {} \
                         is unbounded; only the last tier has an empty tier_to",
                        describe(p)
                    ),
                ),
                Some(prev_to) => {
                    let expected = prev_to + Decimal::ONE;
                    if from < expected {
                        problems.at(
                            r.row,
                            TIER_FROM,
                            format!(
                                "tiers of price {id:?} overlap: this tier starts at {from} but the tier \
                                 on {} ends at {prev_to}; it should start at {expected}",
                                describe(p)
                            ),
                        );
                    } else if from > expected {
                        problems.at(
                            r.row,
                            TIER_FROM,
                            format!(
                                "tiers of price {id:?} leave a gap: this tier starts at {from} but the \
                                 tier on {} ends at {prev_to}; it should start at {expected}",
                                describe(p)
                            ),
                        );
                    }
                }
            },
        }
        previous = Some(r);
    }
    if let Some(last) = previous
        && let Some(to) = last.tier_to
    {
        problems.at(
            last.row,
            TIER_TO,
            format!(
                "the last tier of price {id:?} ends at {to}: the last tier must be unbounded \
                 (empty tier_to), or quantities above {to} have no price"
            ),
        );
    }
    if problems.count() > before {
        return None;
    }
    Some(
        sorted
            .into_iter()
            .map(|r| Tier {
                from: r.tier_from.unwrap_or(Decimal::ZERO),
                to: r.tier_to,
                unit_price: r.unit_price.unwrap_or(Decimal::ZERO),
                flat_fee: r.flat_fee,
            })
            .collect(),
    )
}

/// Two prices in force for the same (license type, customer, currency) on one day.
fn check_overlaps(prices: &[(usize, Price)], problems: &mut Problems<'_>) {
    // (license type, customer, currency): the prices that must not be in force on one day.
    type Key<'a> = (&'a str, Option<&'a str>, Currency);
    let mut by_key: BTreeMap<Key<'_>, Vec<&(usize, Price)>> = BTreeMap::new();
    for entry in prices {
        let p = &entry.1;
        by_key
            .entry((
                p.license_type.as_str(),
                p.customer.as_ref().map(BillingAccount::as_str),
                p.currency,
            ))
            .or_default()
            .push(entry);
    }
    for ((license_type, customer, currency), mut list) in by_key {
        list.sort_by_key(|(row, _)| *row);
        for (i, (row_a, a)) in list.iter().map(|e| (e.0, &e.1)).enumerate() {
            for (row_b, b) in list[i + 1..].iter().map(|e| (e.0, &e.1)) {
                let starts_before_a_ends = match (b.effective_from, a.effective_to) {
                    (Some(bf), Some(at)) => bf <= at,
                    _ => true,
                };
                let a_starts_before_b_ends = match (a.effective_from, b.effective_to) {
                    (Some(af), Some(bt)) => af <= bt,
                    _ => true,
                };
                if !(starts_before_a_ends && a_starts_before_b_ends) {
                    continue;
                }
                // The first day both are in force.
                let day = match (a.effective_from, b.effective_from) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, y) => x.or(y),
                };
                let day = day.map_or("every day".to_owned(), |d| {
                    format!("on {}", d.format("%Y-%m-%d"))
                });
                problems.at(
                    row_b,
                    EFFECTIVE_FROM,
                    format!(
                        "prices {:?} (row {row_b}) and {:?} (row {row_a}) are both in force {day} \
                         for license type {license_type:?}, {}, {currency}: set effective_to of one \
                         before effective_from of the other",
                        b.price_ref(),
                        a.price_ref(),
                        customer.map_or("list price".to_owned(), |c| format!("customer {c:?}")),
                    ),
                );
            }
        }
    }
}
