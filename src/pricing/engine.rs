//! The amount of one line: docs/PRICING.md "The amount of a line", as a pure function.
//!
//! Every step is checked arithmetic: a quantity from a peer can be anything a `Decimal` holds,
//! and a product or sum that does not fit is an [`Overflow`] the run reports as an exception,
//! never a panic and never a line.

use super::{Model, Overflow, Price, PriceTrace, Priced, Tier, TierApplied};
use crate::domain::{RoundingMode, checked_sum};
use rust_decimal::{Decimal, RoundingStrategy};

/// Decimals of the averaged rate shown on graduated and package lines (docs/PRICING.md).
const RATE_DECIMALS: u32 = 4;

/// Prices `quantity` with `price`: raw amount, minimum, then one rounding by the currency.
pub(super) fn price_line(
    price: &Price,
    quantity: Decimal,
    rounding: RoundingMode,
) -> Result<Priced, Overflow> {
    let price_ref = price.price_ref();
    let overflow = || Overflow {
        price_ref: price_ref.clone(),
        quantity,
    };
    let included = price.included_quantity;
    let billable_quantity = quantity
        .checked_sub(included)
        .ok_or_else(overflow)?
        .max(Decimal::ZERO);
    let billable = !quantity.is_zero() || price.min_charge.is_some() || price.model == Model::Flat;

    let (tiers, raw_amount) = if billable {
        raw_amount(price, billable_quantity).ok_or_else(overflow)?
    } else {
        (Vec::new(), Decimal::ZERO)
    };
    let minimum_applied = price.min_charge.filter(|min| *min > raw_amount);
    let charged = minimum_applied.unwrap_or(raw_amount);
    let amount = price.currency.round(charged, rounding);
    // An amount so large that its minor units no longer fit a `Decimal` cannot be billed to
    // the cent: as much an overflow as a product that does not fit.
    if amount.scale() != price.currency.minor_units() {
        return Err(overflow());
    }

    let rate = match price.model {
        Model::PerUnit => first_unit_price(price),
        Model::Volume => holding_tier(&price.tiers, billable_quantity)
            .map(|t| t.unit_price)
            .unwrap_or(Decimal::ZERO),
        Model::Flat => price
            .tiers
            .first()
            .and_then(|t| t.flat_fee)
            .unwrap_or(Decimal::ZERO),
        Model::Graduated | Model::Package => {
            average_rate(amount, quantity, rounding).ok_or_else(overflow)?
        }
    };

    Ok(Priced {
        rate,
        amount,
        price_ref: price_ref.clone(),
        billable,
        trace: PriceTrace {
            price_ref,
            model: price.model,
            quantity,
            included,
            billable_quantity,
            package_size: price.package_size,
            tiers,
            raw_amount,
            minimum_applied,
            rounding,
            rounded_amount: amount,
        },
    })
}

/// The raw amount of `b` billable units, with the tiers that made it up; `None` when a step
/// does not fit a `Decimal`.
fn raw_amount(price: &Price, b: Decimal) -> Option<(Vec<TierApplied>, Decimal)> {
    let applied = match price.model {
        Model::PerUnit => match price.tiers.first() {
            Some(t) => vec![applied(t, b, None)?],
            None => Vec::new(),
        },
        Model::Flat => match price.tiers.first() {
            Some(t) => vec![applied(t, Decimal::ZERO, t.flat_fee)?],
            None => Vec::new(),
        },
        Model::Package => {
            // package_size > 0 is checked when the table is loaded; 1 only guards the
            // impossible case instead of dividing by zero.
            let size = price.package_size.unwrap_or(Decimal::ONE);
            let packages = b.checked_div(size)?.ceil();
            match price.tiers.first() {
                Some(t) => vec![applied(t, packages, None)?],
                None => Vec::new(),
            }
        }
        Model::Volume => match holding_tier(&price.tiers, b) {
            Some(t) => vec![applied(t, b, t.flat_fee)?],
            None => Vec::new(),
        },
        Model::Graduated => {
            let mut out = Vec::new();
            let mut lower = Decimal::ZERO; // u_(k-1), with u_0 = 0
            for tier in &price.tiers {
                let upper = tier.to.map_or(b, |to| b.min(to));
                let units = upper.checked_sub(lower)?.max(Decimal::ZERO);
                out.push(applied(tier, units, tier.flat_fee)?);
                // The tier holding b is the last one reached.
                match tier.to {
                    Some(to) if b > to => lower = to,
                    _ => break,
                }
            }
            out
        }
    };
    let total = checked_sum(applied.iter().map(|t| t.amount))?;
    Some((applied, total))
}

fn applied(tier: &Tier, units: Decimal, flat_fee: Option<Decimal>) -> Option<TierApplied> {
    let amount = units
        .checked_mul(tier.unit_price)?
        .checked_add(flat_fee.unwrap_or(Decimal::ZERO))?;
    Some(TierApplied {
        from: tier.from,
        to: tier.to,
        units,
        unit_price: tier.unit_price,
        flat_fee,
        amount,
    })
}

/// The first tier with `b <= tier_to` (the last tier is unbounded, so there always is one).
fn holding_tier(tiers: &[Tier], b: Decimal) -> Option<&Tier> {
    tiers.iter().find(|t| t.to.is_none_or(|to| b <= to))
}

fn first_unit_price(price: &Price) -> Decimal {
    price
        .tiers
        .first()
        .map(|t| t.unit_price)
        .unwrap_or(Decimal::ZERO)
}

/// `amount ÷ q` to 4 decimals; 0 when `q = 0` (see the module documentation of `pricing`).
///
/// This is a displayed rate, not money: the amount never comes from it, so rounding it here
/// does not break "one rounding of money, in `Currency::round`".
fn average_rate(amount: Decimal, quantity: Decimal, rounding: RoundingMode) -> Option<Decimal> {
    if quantity.is_zero() {
        return Some(Decimal::ZERO);
    }
    let strategy = match rounding {
        RoundingMode::HalfUp => RoundingStrategy::MidpointAwayFromZero,
        RoundingMode::HalfEven => RoundingStrategy::MidpointNearestEven,
    };
    let mut rate = amount
        .checked_div(quantity)?
        .round_dp_with_strategy(RATE_DECIMALS, strategy);
    rate.rescale(RATE_DECIMALS);
    Some(rate)
}
