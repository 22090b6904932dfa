//! The pure rules of the ActivePlatform connector: how a customer key matches an account, how
//! an amount becomes AP's `total`, and how tally recognises its own corrections.

use crate::domain::LedgerLine;
use rust_decimal::Decimal;

/// The canonical form of a GUID (32 lowercase hex digits), if `s` looks like one:
/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` or 32 hex digits, optionally in braces.
pub fn guid_form(s: &str) -> Option<String> {
    let s = s.trim();
    let inner = match (s.strip_prefix('{'), s.strip_suffix('}')) {
        (Some(_), Some(_)) if s.len() >= 2 => &s[1..s.len() - 1],
        (None, None) => s,
        _ => return None,
    };
    let bytes = inner.as_bytes();
    let dashed = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    let plain = bytes.len() == 32 && bytes.iter().all(u8::is_ascii_hexdigit);
    (dashed || plain).then(|| inner.replace('-', "").to_ascii_lowercase())
}

/// Does an account's attribute value hold this customer key? GUIDs compare by their canonical
/// form (case, dashes and braces ignored) when both sides look like GUIDs; anything else must
/// be equal once trimmed — an organization name is not guessed at.
pub fn attribute_matches(wanted: &str, actual: &str) -> bool {
    match (guid_form(wanted), guid_form(actual)) {
        (Some(a), Some(b)) => a == b,
        _ => wanted.trim() == actual.trim(),
    }
}

/// E-mail addresses compare case-insensitively, trimmed.
pub fn emails_match(wanted: &str, actual: &str) -> bool {
    let (a, b) = (wanted.trim(), actual.trim());
    !a.is_empty() && a.to_lowercase() == b.to_lowercase()
}

/// The amount as AP's `total`: a string with exactly two decimals. Never rounds: an amount
/// with more decimals is an error.
pub fn total_text(amount: Decimal) -> Result<String, String> {
    let normalized = amount.normalize();
    if normalized.scale() > 2 {
        return Err(format!(
            "amount {normalized} has more than two decimals; ActivePlatform takes totals with \
             at most two (check the currency's rounding in the pricing table)"
        ));
    }
    let mut shown = normalized;
    shown.rescale(2);
    Ok(shown.to_string())
}

/// The marker of one revision: `tally:<idempotency key>`.
pub fn marker_for(line: &LedgerLine) -> String {
    format!("tally:{}", line.idempotency_key)
}

/// The marker as written into a correction's comment, in brackets so that `#r1` is never read
/// inside `#r10`.
fn tag(marker: &str) -> String {
    format!("[{marker}]")
}

/// The comment of a correction: the marker first (so that a comment AP shortens keeps it), then
/// what an accountant reads.
pub fn comment(line: &LedgerLine, marker: &str) -> String {
    let kind = if line.is_adjustment() {
        format!("revision {} (adjustment)", line.revision)
    } else {
        format!("revision {}", line.revision)
    };
    format!(
        "{} {} {}: {} × {} {} = {} {}, {kind}",
        tag(marker),
        line.key.license_type,
        line.key.period,
        line.quantity.normalize(),
        line.rate,
        line.currency.code(),
        line.amount,
        line.currency.code(),
    )
}

/// Is this the comment of the correction that carries `marker`?
pub fn comment_has_marker(comment: &str, marker: &str) -> bool {
    comment.trim_start().starts_with(&tag(marker))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn guids_compare_without_case_dashes_or_braces() {
        let a = "{6F9619FF-8B86-D011-B42D-00C04FC964FF}";
        assert!(attribute_matches(a, "6f9619ff8b86d011b42d00c04fc964ff"));
        assert!(attribute_matches(
            " 6f9619ff-8b86-d011-b42d-00c04fc964ff ",
            a
        ));
        assert!(!attribute_matches(
            a,
            "6f9619ff-8b86-d011-b42d-00c04fc964fe"
        ));
        assert_eq!(guid_form("{6f9619ff-8b86-d011-b42d-00c04fc964ff"), None);
        assert_eq!(guid_form("6f9619ff-8b86d011-b42d-00c04fc964ff0"), None);
    }

    #[test]
    fn other_values_must_be_equal_once_trimmed() {
        assert!(attribute_matches("Acme Corporation", " Acme Corporation "));
        assert!(!attribute_matches("Acme Corporation", "acme corporation"));
        assert!(!attribute_matches("ACME-1", "ACME1"));
    }

    #[test]
    fn emails_ignore_case() {
        assert!(emails_match("Ann@Acme.example", "ann@acme.example "));
        assert!(!emails_match("ann@acme.example", "joann@acme.example"));
        assert!(!emails_match("", ""));
    }

    #[test]
    fn totals_have_two_decimals_and_are_never_rounded() {
        assert_eq!(total_text(dec!(12.5)).unwrap(), "12.50");
        assert_eq!(total_text(dec!(-3)).unwrap(), "-3.00");
        assert_eq!(total_text(dec!(7.1000)).unwrap(), "7.10");
        assert!(total_text(dec!(1.005)).is_err());
    }

    #[test]
    fn a_marker_is_not_found_inside_a_longer_one() {
        let c = "[tally:2026-10/s/1/Agent#r10] Agent ...";
        assert!(comment_has_marker(c, "tally:2026-10/s/1/Agent#r10"));
        assert!(!comment_has_marker(c, "tally:2026-10/s/1/Agent#r1"));
    }
}
