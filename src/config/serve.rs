//! `[serve]`: where the accountants' review page (`tally serve`) listens, the address people
//! reach it at (whose `https://` makes the session cookie `Secure`), how long a sign-in lasts,
//! and whether `tally daemon` serves the page too, on its own port beside `/metrics`.
//!
//! Checked with the rest of the configuration, so that a typo in the address is refused at
//! start-up with its key rather than found when someone opens the page.

use crate::problem::Problem;
use serde::Deserialize;
use std::net::SocketAddr;

/// `[serve]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeSettings {
    /// `host:port` that `tally serve` listens on (`--listen` wins).
    pub listen: String,
    /// The address people open, e.g. `https://billing.example.com/`; `https://` marks the
    /// session cookie `Secure` (TLS ends in front of tally).
    pub public_url: Option<String>,
    /// Hours a sign-in lasts.
    pub session_hours: u32,
    /// Serve the page inside `tally daemon` too, on `daemon.listen`.
    pub in_daemon: bool,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            session_hours: 12,
            in_daemon: false,
        }
    }
}

impl ServeSettings {
    /// The address to listen on; a problem naming `serve.listen` when it is not `host:port`.
    pub fn address(&self) -> Result<SocketAddr, Problem> {
        let listen = self.listen.trim();
        listen.parse().map_err(|_| {
            Problem::new(
                "serve.listen",
                format!(
                    "{listen:?} is not an address and port such as 127.0.0.1:8080 or 0.0.0.0:8080"
                ),
            )
        })
    }

    /// True when the page is reached over TLS: the cookie then carries `Secure`.
    pub fn behind_tls(&self) -> bool {
        self.public_url
            .as_deref()
            .is_some_and(|u| u.trim().to_ascii_lowercase().starts_with("https://"))
    }

    /// Every problem of `[serve]`.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Err(p) = self.address() {
            problems.push(p);
        }
        if let Some(url) = &self.public_url {
            let lower = url.trim().to_ascii_lowercase();
            if !(lower.starts_with("https://") || lower.starts_with("http://")) {
                problems.push(Problem::new(
                    "serve.public_url",
                    format!("{url:?} is not an http:// or https:// address"),
                ));
            }
        }
        if self.session_hours == 0 || self.session_hours > 24 * 30 {
            problems.push(Problem::new(
                "serve.session_hours",
                format!(
                    "is {}: a sign-in must last between 1 and 720 hours",
                    self.session_hours
                ),
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key_and_https_makes_the_cookie_secure() {
        let settings = ServeSettings {
            listen: "localhost".into(),
            public_url: Some("billing.example.com".into()),
            session_hours: 0,
            in_daemon: false,
        };
        let all: Vec<String> = settings.validate().iter().map(|p| p.to_string()).collect();
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all[0].contains("serve.listen"), "{all:?}");
        assert!(all[1].contains("serve.public_url"), "{all:?}");
        assert!(all[2].contains("serve.session_hours"), "{all:?}");
        assert!(!ServeSettings::default().behind_tls());
        let tls = ServeSettings {
            public_url: Some("HTTPS://billing.example.com/".into()),
            ..ServeSettings::default()
        };
        assert!(tls.behind_tls() && tls.validate().is_empty());
    }
}
