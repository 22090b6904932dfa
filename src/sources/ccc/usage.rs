//! What a page of users and their usage mean for billing (docs/connectors/ccc.md), as pure functions:
//! who is billable, under which item, and the metered quantities.

use crate::domain::StagedRecord;
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// The `item` of a user whose `groupType` is missing or null: it maps to no license type, so
/// the user is reported as an exception rather than dropped.
pub const NO_GROUP: &str = "(no groupType)";

/// A metered quantity: one of the UserUsage totals tally can bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    MessagesSent,
    MessagesReceived,
    Attachments,
    AttachmentBytes,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::MessagesSent,
        Metric::MessagesReceived,
        Metric::Attachments,
        Metric::AttachmentBytes,
    ];

    /// The configuration name, also the staged record's `item`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::MessagesSent => "messages_sent",
            Metric::MessagesReceived => "messages_received",
            Metric::Attachments => "attachments",
            Metric::AttachmentBytes => "attachment_bytes",
        }
    }

    /// The UserUsage field it is read from.
    pub fn field(self) -> &'static str {
        match self {
            Metric::MessagesSent => "totalMessagesSent",
            Metric::MessagesReceived => "totalMessagesReceived",
            Metric::Attachments => "totalAttachmentsCount",
            Metric::AttachmentBytes => "totalAttachmentsSize",
        }
    }

    /// The metric configured as `name` (exact, lower case as documented).
    pub fn parse(name: &str) -> Option<Metric> {
        let name = name.trim().to_ascii_lowercase();
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// The UserUsage totals of one period (or the sum of several days).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub attachments_count: u64,
    pub attachments_size: u64,
    pub invitations_sent: u64,
    pub invitations_accepted: u64,
}

const FIELDS: [&str; 6] = [
    "totalMessagesSent",
    "totalMessagesReceived",
    "totalAttachmentsCount",
    "totalAttachmentsSize",
    "totalInvitationsSent",
    "totalInvitationsAccepted",
];

impl Totals {
    /// Reads the totals of a `UserUsage` object. A missing or null total is 0 (the seed marks
    /// every field optional); anything but a non-negative integer is refused, since guessing
    /// would mis-bill.
    pub fn from_usage(usage: &Value) -> Result<Self, String> {
        let object = usage
            .as_object()
            .ok_or_else(|| format!("usage is not a JSON object: {usage}"))?;
        let mut values = [0u64; 6];
        for (slot, field) in values.iter_mut().zip(FIELDS) {
            *slot = match object.get(field) {
                None | Some(Value::Null) => 0,
                Some(value) => value.as_u64().ok_or_else(|| {
                    format!("usage field `{field}` is not a non-negative integer: {value}")
                })?,
            };
        }
        let [a, b, c, d, e, f] = values;
        Ok(Self {
            messages_sent: a,
            messages_received: b,
            attachments_count: c,
            attachments_size: d,
            invitations_sent: e,
            invitations_accepted: f,
        })
    }

    /// The sum of two periods' totals; `None` on overflow.
    pub fn checked_add(self, other: Totals) -> Option<Totals> {
        Some(Totals {
            messages_sent: self.messages_sent.checked_add(other.messages_sent)?,
            messages_received: self
                .messages_received
                .checked_add(other.messages_received)?,
            attachments_count: self
                .attachments_count
                .checked_add(other.attachments_count)?,
            attachments_size: self.attachments_size.checked_add(other.attachments_size)?,
            invitations_sent: self.invitations_sent.checked_add(other.invitations_sent)?,
            invitations_accepted: self
                .invitations_accepted
                .checked_add(other.invitations_accepted)?,
        })
    }

    pub fn get(&self, metric: Metric) -> u64 {
        match metric {
            Metric::MessagesSent => self.messages_sent,
            Metric::MessagesReceived => self.messages_received,
            Metric::Attachments => self.attachments_count,
            Metric::AttachmentBytes => self.attachments_size,
        }
    }

    /// Activity as docs/connectors/ccc.md defines it for a Disabled user: messages sent or received,
    /// attachments or invitations sent.
    pub fn has_activity(&self) -> bool {
        // Any of them non-zero: the same as their sum > 0, without the overflow.
        self.messages_sent > 0
            || self.messages_received > 0
            || self.attachments_count > 0
            || self.invitations_sent > 0
    }

    /// The totals under their API names, for evidence.
    pub fn to_json(self) -> Value {
        json!({
            "totalMessagesSent": self.messages_sent,
            "totalMessagesReceived": self.messages_received,
            "totalAttachmentsCount": self.attachments_count,
            "totalAttachmentsSize": self.attachments_size,
            "totalInvitationsSent": self.invitations_sent,
            "totalInvitationsAccepted": self.invitations_accepted,
        })
    }
}

/// A user's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Disabled,
}

/// One entry of the users list, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// `serviceUserGuid`, canonical.
    pub guid: String,
    pub status: Status,
    /// `groupType` as sent; `None` when missing or null.
    pub group_type: Option<String>,
}

/// Checks one entry of `results`. An unknown `status` fails: whether such a user is billable
/// is not known, and billing or skipping it silently would both be wrong.
pub fn parse_user(raw: Value) -> Result<User, String> {
    let object = raw
        .as_object()
        .ok_or_else(|| format!("is not a JSON object: {raw}"))?;
    let guid = match object.get("serviceUserGuid") {
        Some(Value::String(text)) => super::guid::normalize(text)
            .ok_or_else(|| format!("has a serviceUserGuid that is not a GUID: {text:?}"))?,
        Some(other) => {
            return Err(format!(
                "has a serviceUserGuid that is not a string: {other}"
            ));
        }
        None => return Err("has no serviceUserGuid".to_owned()),
    };
    let status = match object.get("status").and_then(Value::as_str) {
        Some(s) if s.eq_ignore_ascii_case("Active") => Status::Active,
        Some(s) if s.eq_ignore_ascii_case("Disabled") => Status::Disabled,
        other => {
            return Err(format!(
                "(user {guid}) has status {}, expected \"Active\" or \"Disabled\"",
                other.map_or_else(
                    || object
                        .get("status")
                        .map_or("missing".to_owned(), Value::to_string),
                    |s| format!("{s:?}")
                )
            ));
        }
    };
    let group_type = match object.get("groupType") {
        None | Some(Value::Null) => None,
        Some(Value::String(g)) if g.trim().is_empty() => None,
        Some(Value::String(g)) => Some(g.trim().to_owned()),
        Some(other) => {
            return Err(format!(
                "(user {guid}) has a groupType that is not a string: {other}"
            ));
        }
    };
    Ok(User {
        guid,
        status,
        group_type,
    })
}

/// The staged records of one user in the month: the license (when billable) keyed by the
/// user's GUID, and each configured metered quantity with a non-zero total keyed
/// `{guid}/{metric}`.
pub fn stage(service: &str, user: &User, totals: &Totals, metered: &[Metric]) -> Vec<StagedRecord> {
    let mut records = Vec::new();
    let billable = match user.status {
        Status::Active => true,
        Status::Disabled => totals.has_activity(),
    };
    if billable {
        records.push(StagedRecord {
            record_key: user.guid.clone(),
            customer_key: service.to_owned(),
            item: user
                .group_type
                .clone()
                .unwrap_or_else(|| NO_GROUP.to_owned()),
            quantity: Decimal::ONE,
        });
    }
    // Usage is billed whoever used it: a Disabled user without activity has no message or
    // attachment totals anyway.
    for metric in metered {
        let total = totals.get(*metric);
        if total > 0 {
            records.push(StagedRecord {
                record_key: format!("{}/{}", user.guid, metric.name()),
                customer_key: service.to_owned(),
                item: metric.name().to_owned(),
                quantity: Decimal::from(total),
            });
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "6f9619ff8b86d011b42d00cf4fc964ff";
    const USER: &str = "0123456789abcdef0123456789abcdef";

    fn user(status: &str, group: Value) -> User {
        parse_user(json!({
            "serviceUserGuid": USER.to_uppercase(),
            "emailAddress": "a@example.com",
            "status": status,
            "groupType": group,
        }))
        .unwrap()
    }

    fn totals(sent: u64, invitations: u64, bytes: u64) -> Totals {
        Totals {
            messages_sent: sent,
            invitations_sent: invitations,
            attachments_size: bytes,
            ..Totals::default()
        }
    }

    #[test]
    fn an_active_user_is_billed_even_without_activity() {
        let records = stage(
            SERVICE,
            &user("Active", json!("Guest")),
            &Totals::default(),
            &[],
        );
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].record_key, USER);
        assert_eq!(records[0].customer_key, SERVICE);
        assert_eq!(records[0].item, "Guest");
        assert_eq!(records[0].quantity, Decimal::ONE);
    }

    #[test]
    fn a_disabled_user_is_billed_only_with_activity() {
        let disabled = user("Disabled", json!("Professional"));
        assert!(stage(SERVICE, &disabled, &Totals::default(), &[]).is_empty());
        assert_eq!(stage(SERVICE, &disabled, &totals(0, 1, 0), &[]).len(), 1);
        // Attachment bytes alone are not activity in the documented sense.
        assert!(stage(SERVICE, &disabled, &totals(0, 0, 10), &[]).is_empty());
    }

    #[test]
    fn configured_non_zero_metered_totals_become_records() {
        let records = stage(
            SERVICE,
            &user("Active", json!("Professional")),
            &totals(7, 0, 0),
            &[Metric::MessagesSent, Metric::AttachmentBytes],
        );
        let keys: Vec<_> = records
            .iter()
            .map(|r| (r.record_key.as_str(), r.item.as_str(), r.quantity))
            .collect();
        assert_eq!(
            keys,
            [
                (USER, "Professional", Decimal::ONE),
                (
                    &*format!("{USER}/messages_sent"),
                    "messages_sent",
                    Decimal::from(7)
                ),
            ]
        );
    }

    #[test]
    fn a_missing_group_is_staged_under_a_marker_item() {
        let records = stage(
            SERVICE,
            &user("Active", Value::Null),
            &Totals::default(),
            &[],
        );
        assert_eq!(records[0].item, NO_GROUP);
    }

    #[test]
    fn an_unknown_status_or_a_bad_guid_fails_with_the_reason() {
        let error = parse_user(json!({"serviceUserGuid": USER, "status": "0"})).unwrap_err();
        assert!(error.contains("\"0\""), "{error}");
        let error = parse_user(json!({"serviceUserGuid": "x", "status": "Active"})).unwrap_err();
        assert!(error.contains("not a GUID"), "{error}");
    }

    #[test]
    fn totals_are_read_strictly_and_summed() {
        let t = Totals::from_usage(&json!({"totalMessagesSent": 3, "totalAttachmentsSize": null}))
            .unwrap();
        assert_eq!(t, totals(3, 0, 0));
        assert!(Totals::from_usage(&json!({"totalMessagesSent": -1})).is_err());
        assert!(Totals::from_usage(&json!({"totalMessagesSent": 1.5})).is_err());
        assert!(Totals::from_usage(&json!([])).is_err());
        let sum = t.checked_add(totals(1, 2, 3)).unwrap();
        assert_eq!(sum, totals(4, 2, 3));
        assert_eq!(totals(u64::MAX, 0, 0).checked_add(totals(1, 0, 0)), None);
    }

    #[test]
    fn metric_names_are_the_documented_ones() {
        assert_eq!(
            Metric::parse("attachment_bytes"),
            Some(Metric::AttachmentBytes)
        );
        assert_eq!(Metric::parse("messages"), None);
        assert_eq!(Metric::AttachmentBytes.field(), "totalAttachmentsSize");
    }
}
