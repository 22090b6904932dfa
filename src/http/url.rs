//! URLs as tally builds, checks and shows them: query values encoded by hand, base URLs that
//! carry no credential, and every URL redacted before it reaches a log or a message.

/// Percent-encodes a query name or value: everything but RFC 3986's unreserved characters,
/// for the URLs tally builds by hand (RamBase's `$`-prefixed names must stay as they are).
pub fn encode_query_value(value: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(value, RESERVED).to_string()
}

/// `Ok` when `base_url` is an absolute http(s) URL with a host and without credentials, query
/// or fragment, so that tally can join API paths to it and never logs a password. `example`
/// ends each message; `credentials` says where credentials belong instead.
pub fn check_base_url(base_url: &str, example: &str, credentials: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(base_url.trim())
        .map_err(|e| format!("{base_url:?} is not a URL ({e}); {example}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{base_url:?} must start with https:// (or http:// for the simulator); {example}"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{base_url:?} has no host; {example}"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in a URL end up in logs.
        return Err(format!("must not contain credentials; {credentials}"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{base_url:?} must not have a query or fragment; {example}"
        ));
    }
    Ok(())
}

/// The URL without credentials or token-like query parameters, safe for logs and messages.
pub fn redact_url(url: &str) -> String {
    if plainly_without_secrets(url) {
        // Every request's URL is redacted before it is sent (for its messages), a page at a
        // time: a URL with nothing to take out is not parsed and rebuilt.
        return url.to_owned();
    }
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    if lower.contains("token")
                        || lower.contains("secret")
                        || lower.contains("password")
                    {
                        (k.into_owned(), "REDACTED".to_owned())
                    } else {
                        (k.into_owned(), v.into_owned())
                    }
                })
                .collect();
            if pairs.is_empty() {
                parsed.set_query(None);
            } else {
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => url.to_owned(),
    }
}

/// True when `url` surely holds nothing [`redact_url`] takes out: no `@` (credentials), no `%`
/// (an escaped name could spell a secret's), and none of the words a secret's parameter name
/// carries, in any case. Anything else is parsed and redacted.
fn plainly_without_secrets(url: &str) -> bool {
    if url.contains(['@', '%']) {
        return false;
    }
    let lower = url.to_ascii_lowercase();
    !["token", "secret", "password"]
        .iter()
        .any(|word| lower.contains(word))
}
