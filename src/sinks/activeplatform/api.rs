//! ActivePlatform's JSON shapes (docs/connectors/activeplatform.md), read leniently where the vendor's documentation
//! is loose: ids may come as numbers or strings, `custom_attributes` as a list or a map.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// One account of `GET /api/vendor/v1/accounts.json` (a bare JSON array of these). Only the
/// fields tally reads; the rest is ignored.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct RawAccount {
    #[serde(deserialize_with = "id_text")]
    pub id: String,
    #[serde(default, deserialize_with = "text_or_empty")]
    pub name: String,
    #[serde(default, deserialize_with = "text_or_empty")]
    pub email: String,
    #[serde(default, deserialize_with = "text_or_empty")]
    pub status: String,
    #[serde(default)]
    pub custom_attributes: Option<CustomAttributes>,
}

/// `custom_attributes`: the seed's example is an object map, its field table says a list of
/// `{name, value}`; both are met in practice.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum CustomAttributes {
    List(Vec<NamedValue>),
    Map(BTreeMap<String, serde_json::Value>),
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct NamedValue {
    #[serde(default, deserialize_with = "text_or_empty")]
    pub name: String,
    #[serde(default)]
    pub value: serde_json::Value,
}

impl CustomAttributes {
    /// Every `(name, value)` pair with a value (null values are skipped; numbers become text).
    pub fn pairs(&self) -> Vec<(&str, String)> {
        match self {
            CustomAttributes::List(list) => list
                .iter()
                .filter_map(|nv| value_text(&nv.value).map(|v| (nv.name.as_str(), v)))
                .collect(),
            CustomAttributes::Map(map) => map
                .iter()
                .filter_map(|(k, v)| value_text(v).map(|v| (k.as_str(), v)))
                .collect(),
        }
    }
}

fn value_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A JSON:API document with one resource (`201` answer of the create operation).
#[derive(Debug, Deserialize)]
pub(super) struct OneCorrection {
    pub data: CorrectionResource,
}

/// A JSON:API document with a list (`GET .../corrections`).
#[derive(Debug, Deserialize)]
pub(super) struct CorrectionList {
    #[serde(default)]
    pub data: Vec<CorrectionResource>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct CorrectionResource {
    #[serde(deserialize_with = "id_text")]
    pub id: String,
    #[serde(default)]
    pub attributes: CorrectionAttributes,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct CorrectionAttributes {
    #[serde(default, deserialize_with = "opt_text")]
    pub account_id: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    pub total: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    pub comment: Option<String>,
}

/// Error bodies: JSON:API `{"errors":[{status,code,title,detail,source{pointer}}]}` on v3;
/// v1 is not documented, so `{"error": ..}`, `{"message": ..}` and `{"errors": ["..."]}` are
/// read too.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub errors: Vec<ErrorEntry>,
    #[serde(default, deserialize_with = "opt_text")]
    pub error: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    pub message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum ErrorEntry {
    Text(String),
    Object {
        #[serde(default, deserialize_with = "opt_text")]
        code: Option<String>,
        #[serde(default, deserialize_with = "opt_text")]
        title: Option<String>,
        #[serde(default, deserialize_with = "opt_text")]
        detail: Option<String>,
        #[serde(default)]
        source: Option<ErrorSource>,
    },
}

#[derive(Debug, Deserialize)]
pub(super) struct ErrorSource {
    #[serde(default, deserialize_with = "opt_text")]
    pub pointer: Option<String>,
}

impl ErrorBody {
    /// The vendor's messages as one line: `code: detail (pointer); ...`.
    pub fn summary(&self) -> Option<String> {
        let mut parts: Vec<String> = self
            .errors
            .iter()
            .map(|e| match e {
                ErrorEntry::Text(t) => t.clone(),
                ErrorEntry::Object {
                    code,
                    title,
                    detail,
                    source,
                } => {
                    let text = detail.clone().or_else(|| title.clone()).unwrap_or_default();
                    let mut out = match code {
                        Some(c) => format!("{c}: {text}"),
                        None => text,
                    };
                    if let Some(p) = source.as_ref().and_then(|s| s.pointer.as_deref()) {
                        out.push_str(&format!(" ({p})"));
                    }
                    out
                }
            })
            .collect();
        parts.extend(self.error.clone());
        parts.extend(self.message.clone());
        parts.retain(|p| !p.trim().is_empty());
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

fn scalar_text(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) => Some(s.trim().to_owned()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn id_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    scalar_text(v.clone())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| serde::de::Error::custom(format!("expected an id, got {v}")))
}

fn text_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.and_then(scalar_text).unwrap_or_default())
}

fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.and_then(scalar_text))
}

/// Which of ActivePlatform's answers [`parse`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `GET .../accounts.json`: a bare array of accounts.
    Accounts,
    /// The `201` of creating a correction.
    Created,
    /// `GET .../corrections`.
    Corrections,
    /// An error body.
    Error,
}

/// Decodes one of ActivePlatform's answers with the types the connector decodes it with, for
/// the fuzz harness: `Ok` with what was read (shown), or why it was refused.
pub fn parse(answer: Answer, body: &[u8]) -> Result<String, String> {
    let text = |e: serde_json::Error| e.to_string();
    match answer {
        Answer::Accounts => serde_json::from_slice::<Vec<RawAccount>>(body)
            .map(|accounts| {
                let pairs: Vec<Vec<(&str, String)>> = accounts
                    .iter()
                    .map(|a| {
                        a.custom_attributes
                            .as_ref()
                            .map(CustomAttributes::pairs)
                            .unwrap_or_default()
                    })
                    .collect();
                format!("{accounts:?} {pairs:?}")
            })
            .map_err(text),
        Answer::Created => serde_json::from_slice::<OneCorrection>(body)
            .map(|c| format!("{c:?}"))
            .map_err(text),
        Answer::Corrections => serde_json::from_slice::<CorrectionList>(body)
            .map(|l| format!("{l:?}"))
            .map_err(text),
        Answer::Error => serde_json::from_slice::<ErrorBody>(body)
            .map(|e| format!("{:?}", e.summary()))
            .map_err(text),
    }
}
