//! RamBase's JSON shapes (docs/connectors/rambase.md), read leniently where the vendor's documentation is
//! loose: ids and quantities may come as numbers or as numeric strings.

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer};

/// `POST oauth2/access_token` answer. The refresh token is ignored: with client credentials a
/// new token is simply requested again.
#[derive(Deserialize)]
pub(super) struct TokenAnswer {
    pub access_token: String,
    #[serde(default, deserialize_with = "opt_u64")]
    pub expires_in: Option<u64>,
}

/// One page of `GET .../usages?$format=json`.
#[derive(Deserialize)]
pub(super) struct UsagesPage {
    #[serde(default)]
    pub usages: Vec<UsageEntry>,
    #[serde(default)]
    pub paging: Option<Paging>,
}

/// The documented list holds bare usages; RamBase lists elsewhere wrap each in `{"usage":..}`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum UsageEntry {
    Wrapped { usage: Usage },
    Bare(Usage),
}

impl UsageEntry {
    pub fn into_usage(self) -> Usage {
        match self {
            UsageEntry::Wrapped { usage } | UsageEntry::Bare(usage) => usage,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Paging {
    #[serde(default)]
    pub next_page_key: Option<String>,
    /// The number of usages in the whole list, filled by `$inlinecount=allpages`. A value
    /// that is not a count is refused rather than ignored: it is what the read is checked
    /// against.
    #[serde(default, deserialize_with = "opt_count")]
    pub size: Option<u64>,
}

/// A usage as tally needs it (`createdAt` and `usageAmount` are not used).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Usage {
    #[serde(deserialize_with = "u64_any")]
    pub usage_id: u64,
    #[serde(deserialize_with = "date_any")]
    pub date: NaiveDate,
    #[serde(deserialize_with = "i64_any")]
    pub quantity: i64,
}

/// `201` answer of the create operation.
#[derive(Deserialize)]
pub(super) struct Created {
    pub usage: Usage,
}

/// `{httpStatusCode, httpStatusDescription, message, errorMessage{errorMessageId}}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub error_message: Option<ErrorMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ErrorMessage {
    #[serde(default, deserialize_with = "opt_u64")]
    pub error_message_id: Option<u64>,
}

fn number_text(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) => Some(s.trim().to_owned()),
        _ => None,
    }
}

fn u64_any<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    number_text(v.clone())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| serde::de::Error::custom(format!("expected an integer id, got {v}")))
}

fn i64_any<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    number_text(v.clone())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| serde::de::Error::custom(format!("expected an integer, got {v}")))
}

fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.and_then(number_text).and_then(|s| s.parse().ok()))
}

fn opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => number_text(v.clone())
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("expected a count, got {v}"))),
    }
}

fn date_any<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    let s = String::deserialize(d)?;
    super::parse_date(&s)
        .ok_or_else(|| serde::de::Error::custom(format!("expected a date, got {s:?}")))
}

/// Which of RamBase's answers [`parse`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `POST oauth2/access_token`.
    Token,
    /// A page of `GET .../usages`.
    UsagesPage,
    /// The `201` of creating a usage.
    Created,
    /// An error body.
    Error,
}

/// Decodes one of RamBase's answers with the types the connector decodes it with, for the fuzz
/// harness: `Ok` with what was read (shown), or why it was refused.
pub fn parse(answer: Answer, body: &[u8]) -> Result<String, String> {
    let text = |e: serde_json::Error| e.to_string();
    match answer {
        Answer::Token => serde_json::from_slice::<TokenAnswer>(body)
            .map(|t| format!("token expiring in {:?} s", t.expires_in))
            .map_err(text),
        Answer::UsagesPage => serde_json::from_slice::<UsagesPage>(body)
            .map(|page| {
                let next = page.paging.and_then(|p| p.next_page_key);
                let usages: Vec<Usage> = page
                    .usages
                    .into_iter()
                    .map(UsageEntry::into_usage)
                    .collect();
                format!("{usages:?}, next {next:?}")
            })
            .map_err(text),
        Answer::Created => serde_json::from_slice::<Created>(body)
            .map(|c| format!("{:?}", c.usage))
            .map_err(text),
        Answer::Error => serde_json::from_slice::<ErrorBody>(body)
            .map(|e| {
                let id = e.error_message.and_then(|m| m.error_message_id);
                format!("{id:?}: {:?}", e.message)
            })
            .map_err(text),
    }
}
