//! The amount of one line: docs/PRICING.md "The amount of a line", as a pure function.

use super::{Model, Price, PriceTrace, Priced, Tier, TierApplied};
use crate::domain::RoundingMode;
use rust_decimal::{Decimal, RoundingStrategy};

/// Decimals of the averaged rate shown on graduated and package lines (docs/PRICING.md).
const RATE_DECIMALS: u32 = 4;

/// Prices `quantity` with `price`: raw amount, minimum, then one rounding by the currency.
pub(super) fn price_line(price: &Price, quantity: Decimal, rounding: RoundingMode) -> Priced {
    let price_ref = price.price_ref();
    let included = price.included_quantity;
    let billable_quantity = (quantity - included).max(Decimal::ZERO);
    let billable = !quantity.is_zero() || price.min_charge.is_some() || price.model == Model::Flat;

    let (tiers, raw_amount) = if billable {
        raw_amount(price, billable_quantity)
    } else {
        (Vec::new(), Decimal::ZERO)
    };
    let minimum_applied = price.min_charge.filter(|min| *min > raw_amount);
    let charged = minimum_applied.unwrap_or(raw_amount);
    let amount = price.currency.round(charged, rounding);

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
        Model::Graduated | Model::Package => average_rate(amount, quantity, rounding),
    };

    Priced {
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
    }
}

/// The raw amount of `b` billable units, with the tiers that made it up.
fn raw_amount(price: &Price, b: Decimal) -> (Vec<TierApplied>, Decimal) {
    let applied = match price.model {
        Model::PerUnit => price
            .tiers
            .first()
            .map(|t| vec![applied(t, b, None)])
            .unwrap_or_default(),
        Model::Flat => price
            .tiers
            .first()
            .map(|t| vec![applied(t, Decimal::ZERO, t.flat_fee)])
            .unwrap_or_default(),
        Model::Package => {
            // package_size > 0 is checked when the table is loaded; 1 only guards the
            // impossible case instead of dividing by zero.
            let size = price.package_size.unwrap_or(Decimal::ONE);
            let packages = (b / size).ceil();
            price
                .tiers
                .first()
                .map(|t| vec![applied(t, packages, None)])
                .unwrap_or_default()
        }
        Model::Volume => holding_tier(&price.tiers, b)
            .map(|t| vec![applied(t, b, t.flat_fee)])
            .unwrap_or_default(),
        Model::Graduated => {
            let mut out = Vec::new();
            let mut lower = Decimal::ZERO; // u_(k-1), with u_0 = 0
            for tier in &price.tiers {
                let upper = tier.to.map_or(b, |to| b.min(to));
                let units = (upper - lower).max(Decimal::ZERO);
                out.push(applied(tier, units, tier.flat_fee));
                // The tier holding b is the last one reached.
                match tier.to {
                    Some(to) if b > to => lower = to,
                    _ => break,
                }
            }
            out
        }
    };
    let total = applied.iter().map(|t| t.amount).sum();
    (applied, total)
}

fn applied(tier: &Tier, units: Decimal, flat_fee: Option<Decimal>) -> TierApplied {
    TierApplied {
        from: tier.from,
        to: tier.to,
        units,
        unit_price: tier.unit_price,
        flat_fee,
        amount: units * tier.unit_price + flat_fee.unwrap_or(Decimal::ZERO),
    }
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
fn average_rate(amount: Decimal, quantity: Decimal, rounding: RoundingMode) -> Decimal {
    if quantity.is_zero() {
        return Decimal::ZERO;
    }
    let strategy = match rounding {
        RoundingMode::HalfUp => RoundingStrategy::MidpointAwayFromZero,
        RoundingMode::HalfEven => RoundingStrategy::MidpointNearestEven,
    };
    let mut rate = (amount / quantity).round_dp_with_strategy(RATE_DECIMALS, strategy);
    rate.rescale(RATE_DECIMALS);
    rate
}
