//! Tests of the pricing table and the amount of a line: every model, the selection of a price,
//! validation, and properties of the amounts.

use super::*;
use rust_decimal_macros::dec;

const HEADER: &str = "price_id,license_type,customer,currency,model,tier_from,tier_to,unit_price,flat_fee,package_size,included_quantity,min_charge,effective_from,effective_to";

fn table(rows: &str) -> PricingTable {
    let csv = format!("{HEADER}\n{rows}");
    match PricingTable::from_reader("pricing.csv", csv.as_bytes()) {
        Ok(t) => t,
        Err(problems) => panic!("table refused: {problems:#?}"),
    }
}

fn problems(rows: &str) -> Vec<Problem> {
    let csv = format!("{HEADER}\n{rows}");
    match PricingTable::from_reader("pricing.csv", csv.as_bytes()) {
        Ok(t) => panic!("table accepted: {t:?}"),
        Err(problems) => problems,
    }
}

fn has_problem(problems: &[Problem], at: &str, words: &str) -> bool {
    problems
        .iter()
        .any(|p| p.at == at && p.message.contains(words))
}

fn eur() -> Currency {
    "EUR".parse().unwrap()
}

fn oct() -> Period {
    "2026-10".parse().unwrap()
}

/// Prices `q` of license type `lt` for account `acme` in EUR, October 2026, half-up.
fn price(t: &PricingTable, lt: &str, q: Decimal) -> Priced {
    price_for(t, lt, "acme", q, RoundingMode::HalfUp)
}

fn price_for(t: &PricingTable, lt: &str, account: &str, q: Decimal, mode: RoundingMode) -> Priced {
    t.price(
        &LicenseType::new(lt),
        &BillingAccount::new(account),
        eur(),
        oct(),
        q,
        mode,
    )
    .unwrap()
}

// ---- models -------------------------------------------------------------------------------

#[test]
fn per_unit_multiplies_quantity_by_unit_price() {
    let t = table("p1,agent,,EUR,per_unit,,,12.50,,,,,,\n");
    let p = price(&t, "agent", dec!(7));
    assert_eq!(p.amount, dec!(87.50));
    assert_eq!(p.amount.to_string(), "87.50");
    assert_eq!(p.rate, dec!(12.50));
    assert_eq!(p.price_ref, "p1@open");
    assert!(p.billable);
}

#[test]
fn an_amount_too_large_to_compute_is_an_error_for_every_model_never_a_panic() {
    let t = table(
        "p1,agent,,EUR,per_unit,,,12.50,,,,,,\n\
         g,minutes,,EUR,graduated,1,10,10.00,5.00,,,,,\n\
         g,minutes,,EUR,graduated,11,,8.00,3.00,,,,,\n\
         v,seats,,EUR,volume,1,10,10.00,,,,,,\n\
         v,seats,,EUR,volume,11,,9.00,,,,,,\n\
         k,storage,,EUR,package,,,25.00,,0.001,,,,\n",
    );
    // 5e27 users at 12.50 is the figure a lying Genesys report once produced.
    let huge = dec!(5_000_000_000_000_000_000_000_000_000);
    for lt in ["agent", "minutes", "seats", "storage"] {
        let result = t.price(
            &LicenseType::new(lt),
            &BillingAccount::new("acme"),
            eur(),
            oct(),
            huge,
            RoundingMode::HalfUp,
        );
        match result {
            Err(PriceError::Overflow(o)) => {
                assert_eq!(o.quantity, huge, "{lt}");
                assert!(o.to_string().contains("too large to compute"), "{lt}: {o}");
            }
            other => panic!("{lt}: expected an overflow, got {other:?}"),
        }
    }
    // Negative extremes too (b is 0, so only the minimum path runs): a value, not a panic.
    assert!(
        t.price(
            &LicenseType::new("agent"),
            &BillingAccount::new("acme"),
            eur(),
            oct(),
            Decimal::MIN,
            RoundingMode::HalfUp,
        )
        .is_ok()
    );
}

#[test]
fn graduated_prices_each_tier_and_adds_the_flat_fee_of_every_tier_reached() {
    let t = table(
        "g,agent,,EUR,graduated,1,10,10.00,5.00,,,,,\n\
         g,agent,,EUR,graduated,11,50,8.00,3.00,,,,,\n\
         g,agent,,EUR,graduated,51,,6.00,1.00,,,,,\n",
    );
    // 10 × 10 + 5 = 105; then 5 × 8 + 3 = 43; tier 3 not reached.
    let p = price(&t, "agent", dec!(15));
    assert_eq!(p.amount, dec!(148.00));
    assert_eq!(p.rate, dec!(9.8667)); // 148 / 15
    assert_eq!(p.trace.tiers.len(), 2);
    assert_eq!(p.trace.tiers[1].units, dec!(5));
    assert_eq!(p.trace.tiers[1].amount, dec!(43.00));
    // Exactly on a bound: the next tier is not reached.
    assert_eq!(price(&t, "agent", dec!(10)).amount, dec!(105.00));
    // 105 + 40 × 8 + 3 + 10 × 6 + 1 = 489.
    assert_eq!(price(&t, "agent", dec!(60)).amount, dec!(489.00));
}

#[test]
fn volume_prices_every_unit_at_the_holding_tier_plus_its_flat_fee() {
    let t = table(
        "v,agent,,EUR,volume,0,10,10.00,,,,,,\n\
         v,agent,,EUR,volume,11,50,8.00,20.00,,,,,\n\
         v,agent,,EUR,volume,51,,6.00,,,,,,\n",
    );
    let p = price(&t, "agent", dec!(15));
    assert_eq!(p.amount, dec!(140.00)); // 15 × 8 + 20
    assert_eq!(p.rate, dec!(8.00));
    assert_eq!(price(&t, "agent", dec!(10)).amount, dec!(100.00));
    assert_eq!(price(&t, "agent", dec!(51)).amount, dec!(306.00));
}

#[test]
fn package_rounds_up_to_whole_blocks() {
    let t = table("k,storage,,EUR,package,,,25.00,,10,,,,\n");
    let p = price(&t, "storage", dec!(21));
    assert_eq!(p.amount, dec!(75.00)); // 3 packages
    assert_eq!(p.trace.tiers[0].units, dec!(3));
    assert_eq!(p.rate, dec!(3.5714)); // 75 / 21
    assert_eq!(price(&t, "storage", dec!(20)).amount, dec!(50.00));
    assert_eq!(price(&t, "storage", dec!(0.1)).amount, dec!(25.00));
}

#[test]
fn flat_charges_the_fee_whatever_the_quantity() {
    let t = table("f,platform,,EUR,flat,,,,99.90,,,,,\n");
    for q in [dec!(0), dec!(1), dec!(1000)] {
        let p = price(&t, "platform", q);
        assert_eq!(p.amount, dec!(99.90));
        assert_eq!(p.rate, dec!(99.90));
        assert!(p.billable);
    }
}

#[test]
fn included_quantity_is_free() {
    let t = table("p,agent,,EUR,per_unit,,,4.00,,,5,,,\n");
    assert_eq!(price(&t, "agent", dec!(8)).amount, dec!(12.00)); // (8 - 5) × 4
    let p = price(&t, "agent", dec!(3));
    assert_eq!(p.amount, dec!(0.00));
    assert_eq!(p.trace.billable_quantity, dec!(0));
    assert!(p.billable);
}

#[test]
fn minimum_charge_is_the_smallest_amount_of_a_line() {
    let t = table("p,agent,,EUR,per_unit,,,4.00,,,,50.00,,\n");
    let p = price(&t, "agent", dec!(2));
    assert_eq!(p.amount, dec!(50.00));
    assert_eq!(p.trace.raw_amount, dec!(8.00));
    assert_eq!(p.trace.minimum_applied, Some(dec!(50.00)));
    let p = price(&t, "agent", dec!(20));
    assert_eq!(p.amount, dec!(80.00));
    assert_eq!(p.trace.minimum_applied, None);
}

#[test]
fn fractional_quantities_are_priced_exactly() {
    let t = table("p,hours,,EUR,per_unit,,,12.35,,,,,,\n");
    assert_eq!(price(&t, "hours", dec!(5.5)).amount, dec!(67.93)); // 67.925 half-up
    let g = table(
        "g,hours,,EUR,graduated,1,10,10.00,,,,,,\n\
         g,hours,,EUR,graduated,11,,5.00,,,,,,\n",
    );
    // 10 × 10 + 0.5 × 5 = 102.50: 10.5 is above the first tier's bound.
    assert_eq!(price(&g, "hours", dec!(10.5)).amount, dec!(102.50));
}

#[test]
fn both_rounding_modes_on_a_midpoint() {
    let t = table("p,agent,,EUR,per_unit,,,0.835,,,,,,\n");
    let up = price_for(&t, "agent", "acme", dec!(3), RoundingMode::HalfUp);
    let even = price_for(&t, "agent", "acme", dec!(3), RoundingMode::HalfEven);
    assert_eq!(up.trace.raw_amount, dec!(2.505));
    assert_eq!(up.amount, dec!(2.51));
    assert_eq!(even.amount, dec!(2.50));
    assert_eq!(even.amount.to_string(), "2.50");
    assert_eq!(even.trace.rounding, RoundingMode::HalfEven);
}

#[test]
fn amounts_use_the_minor_units_of_the_currency() {
    let t = table("p,agent,,JPY,per_unit,,,120.5,,,,,,\n");
    let p = t
        .price(
            &LicenseType::new("agent"),
            &BillingAccount::new("acme"),
            "JPY".parse().unwrap(),
            oct(),
            dec!(3),
            RoundingMode::HalfUp,
        )
        .unwrap();
    assert_eq!(p.amount.to_string(), "362"); // 361.5 half-up
}

#[test]
fn quantity_zero_is_not_billed_without_minimum_or_flat_model() {
    let t = table(
        "p,agent,,EUR,per_unit,,,4.00,,,,,,\n\
         m,viewer,,EUR,per_unit,,,4.00,,,,10.00,,\n\
         g,guest,,EUR,graduated,0,,1.00,30.00,,,,,\n",
    );
    let p = price(&t, "agent", dec!(0));
    assert!(!p.billable);
    assert_eq!(p.amount, dec!(0.00));
    assert_eq!(p.rate, dec!(4.00));
    let m = price(&t, "viewer", dec!(0));
    assert!(m.billable);
    assert_eq!(m.amount, dec!(10.00));
    // A first-tier flat fee alone does not make a line with quantity 0 billable.
    let g = price(&t, "guest", dec!(0));
    assert!(!g.billable);
    assert_eq!(g.amount, dec!(0.00));
    assert_eq!(g.rate, dec!(0)); // averaged rate over no units
}

// ---- which price applies --------------------------------------------------------------------

#[test]
fn customer_price_beats_the_list_price_and_others_keep_the_list_price() {
    let t = table(
        "list,agent,,EUR,per_unit,,,10.00,,,,,,\n\
         acme,agent,acme,EUR,per_unit,,,7.00,,,,,,\n",
    );
    let own = price_for(&t, "agent", "acme", dec!(3), RoundingMode::HalfUp);
    assert_eq!(own.amount, dec!(21.00));
    assert_eq!(own.price_ref, "acme@open");
    let other = price_for(&t, "agent", "globex", dec!(3), RoundingMode::HalfUp);
    assert_eq!(other.amount, dec!(30.00));
    assert_eq!(other.price_ref, "list@open");
}

#[test]
fn the_price_in_force_on_the_first_day_of_the_period_applies() {
    let t = table(
        "p,agent,,EUR,per_unit,,,10.00,,,,,,2026-10-01\n\
         p,agent,,EUR,per_unit,,,11.00,,,,,2026-10-02,\n",
    );
    // October is priced by 1 October, although the new price starts on the 2nd.
    let p = price(&t, "agent", dec!(1));
    assert_eq!(p.amount, dec!(10.00));
    assert_eq!(p.price_ref, "p@open");
    let nov = t
        .price(
            &LicenseType::new("agent"),
            &BillingAccount::new("acme"),
            eur(),
            "2026-11".parse().unwrap(),
            dec!(1),
            RoundingMode::HalfUp,
        )
        .unwrap();
    assert_eq!(nov.amount, dec!(11.00));
    assert_eq!(nov.price_ref, "p@2026-10-02");
    assert_eq!(t.len(), 2);
}

#[test]
fn a_price_switching_on_the_first_of_a_month_applies_to_that_month() {
    let t = table(
        "p,agent,,EUR,per_unit,,,10.00,,,,,2026-01-01,2026-09-30\n\
         p,agent,,EUR,per_unit,,,12.00,,,,,2026-10-01,\n",
    );
    assert_eq!(price(&t, "agent", dec!(1)).amount, dec!(12.00));
    let sep = t.price(
        &LicenseType::new("agent"),
        &BillingAccount::new("acme"),
        eur(),
        "2026-09".parse().unwrap(),
        dec!(1),
        RoundingMode::HalfUp,
    );
    assert_eq!(sep.unwrap().amount, dec!(10.00));
    // Before any version: no price.
    let dec_2025 = t.price(
        &LicenseType::new("agent"),
        &BillingAccount::new("acme"),
        eur(),
        "2025-12".parse().unwrap(),
        dec!(1),
        RoundingMode::HalfUp,
    );
    assert!(dec_2025.is_err());
}

#[test]
fn a_list_price_in_another_currency_does_not_apply() {
    let t = table("p,agent,,USD,per_unit,,,10.00,,,,,,\n");
    let err = t
        .price(
            &LicenseType::new("agent"),
            &BillingAccount::new("acme"),
            eur(),
            oct(),
            dec!(1),
            RoundingMode::HalfUp,
        )
        .unwrap_err();
    let text = err.to_string();
    for words in ["\"agent\"", "\"acme\"", "EUR", "2026-10-01", "add a row"] {
        assert!(text.contains(words), "{text}");
    }
}

#[test]
fn trace_serializes_with_decimal_strings() {
    let t = table("p,agent,,EUR,per_unit,,,0.835,,,,,,\n");
    let p = price(&t, "agent", dec!(3));
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["amount"], "2.51");
    assert_eq!(json["trace"]["model"], "per_unit");
    assert_eq!(json["trace"]["raw_amount"], "2.505");
    assert_eq!(json["trace"]["rounding"], "half_up");
}

// ---- validation -------------------------------------------------------------------------------

#[test]
fn a_number_that_is_not_a_decimal_is_reported_with_row_and_column() {
    let found = problems(
        "p,agent,,EUR,per_unit,,,1.00,,,,,,\n\
         q,viewer,,EUR,per_unit,,,2.00,,,,,,\n\
         r,guest,,EUR,per_unit,,,abc,,,,,,\n",
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].at, "pricing.csv:4:unit_price");
    assert!(found[0].message.contains("\"abc\""), "{}", found[0].message);
}

#[test]
fn decimal_comma_and_exponent_are_refused_with_a_hint() {
    let found = problems(
        "p,agent,,EUR,per_unit,,,\"12,50\",,,,,,\n\
         q,viewer,,EUR,per_unit,,,1e3,,,,,,\n\
         r,guest,,EUR,per_unit,,,1_000,,,,,,\n",
    );
    assert!(has_problem(
        &found,
        "pricing.csv:2:unit_price",
        "with a point"
    ));
    assert!(has_problem(&found, "pricing.csv:3:unit_price", "exponent"));
    assert!(has_problem(
        &found,
        "pricing.csv:4:unit_price",
        "not a decimal"
    ));
}

#[test]
fn several_problems_are_reported_at_once() {
    let found = problems(
        "p,agent,,EURO,per_unit,,,-1.00,,,,,,\n\
         q,viewer,,EUR,tiered,,,2.00,,,,,,\n\
         k,storage,,EUR,package,,,5.00,,0,,,,\n\
         k2,storage2,,EUR,package,,,5.00,,,,,,\n\
         f,platform,,EUR,flat,,,,,,,,,\n\
         d,desk,,EUR,per_unit,,,1.00,,,,,2026-10-31,2026-10-01\n\
         e,desk2,,EUR,per_unit,,,1.00,,,,,2026-13-01,\n\
         w,web,,EUR,per_unit,,,1.00,2.00,,,,,\n",
    );
    assert!(has_problem(&found, "pricing.csv:2:currency", "EURO"));
    assert!(has_problem(&found, "pricing.csv:2:unit_price", "negative"));
    assert!(has_problem(&found, "pricing.csv:3:model", "tiered"));
    assert!(has_problem(&found, "pricing.csv:4:package_size", "is 0"));
    assert!(has_problem(&found, "pricing.csv:5:package_size", "empty"));
    assert!(has_problem(&found, "pricing.csv:6:flat_fee", "empty"));
    assert!(has_problem(
        &found,
        "pricing.csv:7:effective_to",
        "backwards"
    ));
    assert!(has_problem(
        &found,
        "pricing.csv:8:effective_from",
        "2026-13-01"
    ));
    assert!(has_problem(
        &found,
        "pricing.csv:9:flat_fee",
        "does not charge a flat fee"
    ));
    assert_eq!(found.len(), 9, "{found:#?}");
}

#[test]
fn a_wrong_header_is_reported_by_column() {
    let csv = "price_id,license,customer\np,agent,\n";
    let found = PricingTable::from_reader("pricing.csv", csv.as_bytes()).unwrap_err();
    assert!(has_problem(
        &found,
        "pricing.csv:1:license_type",
        "\"license\""
    ));
    assert!(has_problem(&found, "pricing.csv:1:currency", "missing"));
}

#[test]
fn a_header_with_a_byte_order_mark_is_accepted() {
    let csv = format!("\u{feff}{HEADER}\np,agent,,EUR,per_unit,,,1.00,,,,,,\n");
    let t = PricingTable::from_reader("pricing.csv", csv.as_bytes()).unwrap();
    assert_eq!(t.len(), 1);
}

#[test]
fn cells_are_trimmed_and_blank_rows_skipped() {
    let t = table(
        " p , agent ,, eur , per_unit ,,, 12.50 ,,,,,,\n\
         ,,,,,,,,,,,,,\n",
    );
    assert_eq!(price(&t, "agent", dec!(2)).amount, dec!(25.00));
    assert_eq!(t.len(), 1);
}

#[test]
fn tiers_with_a_gap_are_reported() {
    let found = problems(
        "g,agent,,EUR,graduated,1,10,10.00,,,,,,\n\
         g,agent,,EUR,graduated,12,,8.00,,,,,,\n",
    );
    assert!(
        has_problem(&found, "pricing.csv:3:tier_from", "gap"),
        "{found:#?}"
    );
    assert_eq!(found.len(), 1);
}

#[test]
fn tiers_that_overlap_are_reported() {
    let found = problems(
        "g,agent,,EUR,volume,1,10,10.00,,,,,,\n\
         g,agent,,EUR,volume,10,,8.00,,,,,,\n",
    );
    assert!(
        has_problem(&found, "pricing.csv:3:tier_from", "overlap"),
        "{found:#?}"
    );
}

#[test]
fn tiers_that_do_not_end_unbounded_are_reported() {
    let found = problems(
        "g,agent,,EUR,graduated,0,10,10.00,,,,,,\n\
         g,agent,,EUR,graduated,11,50,8.00,,,,,,\n",
    );
    assert!(
        has_problem(&found, "pricing.csv:3:tier_to", "unbounded"),
        "{found:#?}"
    );
    assert_eq!(found.len(), 1);
}

#[test]
fn tiers_may_be_listed_in_any_order_and_must_start_at_0_or_1() {
    let t = table(
        "g,agent,,EUR,graduated,11,,5.00,,,,,,\n\
         g,agent,,EUR,graduated,1,10,10.00,,,,,,\n",
    );
    assert_eq!(price(&t, "agent", dec!(12)).amount, dec!(110.00));
    let found = problems("g,agent,,EUR,graduated,2,,5.00,,,,,,\n");
    assert!(has_problem(&found, "pricing.csv:2:tier_from", "0 or 1"));
}

#[test]
fn tier_columns_on_a_model_without_tiers_are_reported() {
    let found = problems(
        "p,agent,,EUR,per_unit,1,10,10.00,,,,,,\n\
         q,viewer,,EUR,per_unit,,,10.00,,,,,,\n\
         q,viewer,,EUR,per_unit,,,11.00,,,,,,\n",
    );
    assert!(has_problem(&found, "pricing.csv:2:tier_from", "no tiers"));
    assert!(has_problem(&found, "pricing.csv:2:tier_to", "no tiers"));
    assert!(has_problem(
        &found,
        "pricing.csv:4:price_id",
        "already has row 3"
    ));
}

#[test]
fn columns_that_disagree_between_the_rows_of_one_price_are_reported() {
    let found = problems(
        "g,agent,,EUR,graduated,1,10,10.00,,,,,,\n\
         g,agent,,EUR,graduated,11,,8.00,,,,25.00,,\n\
         g,viewer,,EUR,per_unit,,,8.00,,,,,2027-01-01,\n",
    );
    assert!(
        has_problem(&found, "pricing.csv:3:min_charge", "row 2"),
        "{found:#?}"
    );
    assert!(
        has_problem(&found, "pricing.csv:4:license_type", "names one price"),
        "{found:#?}"
    );
}

#[test]
fn two_prices_in_force_on_the_same_day_are_reported() {
    let found = problems(
        "a,agent,,EUR,per_unit,,,10.00,,,,,2026-01-01,2026-10-31\n\
         b,agent,,EUR,per_unit,,,11.00,,,,,2026-10-01,\n\
         c,agent,acme,EUR,per_unit,,,9.00,,,,,,\n\
         d,agent,,USD,per_unit,,,9.00,,,,,,\n",
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].at, "pricing.csv:3:effective_from");
    assert!(
        found[0].message.contains("2026-10-01"),
        "{}",
        found[0].message
    );
    assert!(
        found[0].message.contains("a@2026-01-01"),
        "{}",
        found[0].message
    );
}

#[test]
fn load_names_the_path_in_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pricing.csv");
    std::fs::write(
        &path,
        format!("{HEADER}\np,agent,,EUR,per_unit,,,x,,,,,,\n"),
    )
    .unwrap();
    let found = PricingTable::load(&path).unwrap_err();
    assert_eq!(found[0].at, format!("{}:2:unit_price", path.display()));
    std::fs::write(
        &path,
        format!("{HEADER}\np,agent,,EUR,per_unit,,,1,,,,,,\n"),
    )
    .unwrap();
    assert_eq!(PricingTable::load(&path).unwrap().len(), 1);
}

// ---- properties ---------------------------------------------------------------------------------

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A quantity with up to 2 decimals, 0 to 1000.
    fn quantity() -> impl Strategy<Value = Decimal> {
        (0i64..=100_000).prop_map(|n| Decimal::new(n, 2))
    }

    /// A price with up to 3 decimals, 0 to 100.
    fn unit_price() -> impl Strategy<Value = Decimal> {
        (0i64..=100_000).prop_map(|n| Decimal::new(n, 3))
    }

    fn graduated(p1: Decimal, p2: Decimal, p3: Decimal, fee: Decimal) -> PricingTable {
        table(&format!(
            "g,agent,,EUR,graduated,1,10,{p1},{fee},,,,,\n\
             g,agent,,EUR,graduated,11,100,{p2},{fee},,,,,\n\
             g,agent,,EUR,graduated,101,,{p3},,,,,,\n"
        ))
    }

    proptest! {
        #[test]
        fn graduated_amount_never_decreases_with_quantity(
            p1 in unit_price(), p2 in unit_price(), p3 in unit_price(), fee in unit_price(),
            a in quantity(), b in quantity(),
        ) {
            let t = graduated(p1, p2, p3, fee);
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(price(&t, "agent", lo).amount <= price(&t, "agent", hi).amount);
        }

        #[test]
        fn graduated_with_one_unbounded_tier_equals_per_unit(p in unit_price(), q in quantity()) {
            let g = table(&format!("g,agent,,EUR,graduated,0,,{p},,,,,,\n"));
            let u = table(&format!("u,agent,,EUR,per_unit,,,{p},,,,,,\n"));
            prop_assert_eq!(price(&g, "agent", q).amount, price(&u, "agent", q).amount);
        }

        #[test]
        fn amounts_have_exactly_the_minor_units_of_the_currency(
            p1 in unit_price(), p2 in unit_price(), p3 in unit_price(), fee in unit_price(),
            q in quantity(), even in any::<bool>(),
        ) {
            let t = graduated(p1, p2, p3, fee);
            let mode = if even { RoundingMode::HalfEven } else { RoundingMode::HalfUp };
            let p = price_for(&t, "agent", "acme", q, mode);
            prop_assert_eq!(p.amount.scale(), 2);
            prop_assert_eq!(p.amount, eur().round(p.trace.raw_amount, mode));
        }

        #[test]
        fn volume_amount_is_billable_quantity_times_the_holding_tier_price(
            p1 in unit_price(), p2 in unit_price(), p3 in unit_price(), q in quantity(),
        ) {
            let t = table(&format!(
                "v,agent,,EUR,volume,1,10,{p1},,,,,,\n\
                 v,agent,,EUR,volume,11,100,{p2},,,,,,\n\
                 v,agent,,EUR,volume,101,,{p3},,,,,,\n"
            ));
            let tier_price = if q <= dec!(10) { p1 } else if q <= dec!(100) { p2 } else { p3 };
            let p = price(&t, "agent", q);
            prop_assert_eq!(p.trace.raw_amount, q * tier_price);
            prop_assert_eq!(p.amount, eur().round(q * tier_price, RoundingMode::HalfUp));
        }

        #[test]
        fn package_amount_is_a_multiple_of_the_package_price(
            cents in 1i64..=100_000, size in 1i64..=50, q in quantity(),
        ) {
            let package_price = Decimal::new(cents, 2);
            let t = table(&format!("k,agent,,EUR,package,,,{package_price},,{size},,,,\n"));
            let p = price(&t, "agent", q);
            prop_assert!((p.amount % package_price).is_zero());
            prop_assert!(p.amount >= q / Decimal::from(size) * package_price);
        }

        #[test]
        fn minimum_charge_is_a_lower_bound(
            p in unit_price(), min in unit_price(), included in 0i64..=20, q in quantity(),
        ) {
            let t = table(&format!("m,agent,,EUR,per_unit,,,{p},,,{included},{min},,\n"));
            let priced = price(&t, "agent", q);
            prop_assert!(priced.billable);
            prop_assert!(priced.amount >= eur().round(min, RoundingMode::HalfUp));
            prop_assert_eq!(
                priced.amount,
                eur().round(priced.trace.raw_amount.max(min), RoundingMode::HalfUp)
            );
        }
    }
}

// ---- more validation, and the fixture -------------------------------------------------------

#[test]
fn a_row_with_a_missing_cell_is_reported_at_the_first_missing_column() {
    let found = problems("p,agent,,EUR,per_unit,,,12.50,,,,,\n");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].at, "pricing.csv:2:effective_to");
    assert!(
        found[0].message.contains("13 cells"),
        "{}",
        found[0].message
    );
}

#[test]
fn a_cell_that_is_not_utf8_is_reported_with_its_column() {
    let mut csv = format!("{HEADER}\n").into_bytes();
    // "Agent é" as a Windows code page writes it.
    csv.extend_from_slice(b"p,Agent \xe9,,EUR,per_unit,,,1.00,,,,,,\n");
    let found = PricingTable::from_reader("pricing.csv", csv.as_slice()).unwrap_err();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].at, "pricing.csv:2:license_type");
    assert!(found[0].message.contains("UTF-8"));
}

#[test]
fn absurdly_large_numbers_are_refused() {
    let found = problems("p,agent,,EUR,per_unit,,,10000000000000,,,,,,\n");
    assert!(has_problem(&found, "pricing.csv:2:unit_price", "too large"));
}

#[test]
fn the_fixture_table_loads_and_prices_every_model() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pricing/pricing.csv");
    let t = PricingTable::load(&path).unwrap();
    assert_eq!(t.len(), 8);
    let nok: Currency = "NOK".parse().unwrap();
    let priced = |lt: &str, account: &str, currency: Currency, period: &str, q: Decimal| {
        t.price(
            &LicenseType::new(lt),
            &BillingAccount::new(account),
            currency,
            period.parse().unwrap(),
            q,
            RoundingMode::HalfUp,
        )
        .unwrap()
    };
    let agent = "Service desk agent";
    assert_eq!(
        priced(agent, "10001", eur(), "2026-10", dec!(4)).amount,
        dec!(50.00)
    );
    assert_eq!(
        priced(agent, "10001", eur(), "2027-01", dec!(4)).amount,
        dec!(52.00)
    );
    // Customer 10042: own price, 2 included.
    assert_eq!(
        priced(agent, "10042", eur(), "2026-10", dec!(4)).amount,
        dec!(22.00)
    );
    let usd: Currency = "USD".parse().unwrap();
    assert_eq!(
        priced(agent, "10042", usd, "2026-10", dec!(4)).amount,
        dec!(56.00)
    );
    // 10 × 9 + 25 + 40 × 7.5 + 5 × 6 = 445.
    let pro = priced(
        "Secure messaging – Professional",
        "10001",
        eur(),
        "2026-10",
        dec!(55),
    );
    assert_eq!(pro.amount, dec!(445.00));
    assert_eq!(pro.rate, dec!(8.0909));
    // Volume: 120 × 0.35 + 5 = 47; 10 × 0.50 = 5 raised to the minimum 10.
    let guest = "Secure messaging – Guest";
    assert_eq!(
        priced(guest, "10001", eur(), "2026-10", dec!(120)).amount,
        dec!(47.00)
    );
    assert_eq!(
        priced(guest, "10001", eur(), "2026-10", dec!(10)).amount,
        dec!(10.00)
    );
    assert_eq!(
        priced("Telephony minutes", "10001", nok, "2026-10", dec!(2500)).amount,
        dec!(135.00)
    );
    assert_eq!(
        priced("Platform fee", "10001", eur(), "2026-10", dec!(1)).amount,
        dec!(199.00)
    );
}

#[test]
fn problems_come_in_file_order_whichever_check_found_them() {
    let found = problems(
        "a,agent,,EUR,per_unit,,,10.00,,,,,,\n\
         b,agent,,EUR,per_unit,,,11.00,,,,,,\n\
         g,viewer,,EUR,graduated,1,10,1.00,,,,,,\n\
         x,guest,,EUR,per_unit,,,x,,,,,,\n",
    );
    let places: Vec<&str> = found.iter().map(|p| p.at.as_str()).collect();
    assert_eq!(
        places,
        [
            "pricing.csv:3:effective_from",
            "pricing.csv:4:tier_to",
            "pricing.csv:5:unit_price"
        ]
    );
}
