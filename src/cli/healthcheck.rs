//! `tally healthcheck [--url URL]`: asks a running daemon's `/healthz` and exits 0 on a 200,
//! 1 otherwise — so that a container's `HEALTHCHECK` (or a load balancer's probe script) needs
//! no curl in the image.
//!
//! It reads no configuration file: a health probe must not need the secrets, nor fail because a
//! mounted file is being edited. The address comes from `--url`, else `TALLY__DAEMON__LISTEN`
//! (as the image sets it), else the daemon's default `127.0.0.1:9464`.

use std::time::Duration;

/// Where the daemon listens when nothing says otherwise (`[daemon] listen`'s default).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// The variable that sets `[daemon] listen`.
pub const LISTEN_ENV: &str = "TALLY__DAEMON__LISTEN";

#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// The URL to ask (default: http://<TALLY__DAEMON__LISTEN, else 127.0.0.1:9464>/healthz).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub timeout: u64,
}

/// The `/healthz` URL of a daemon listening on `listen` (`host:port`); a wildcard address
/// (`0.0.0.0`, `[::]`) is asked on loopback, where the probe runs.
pub fn healthz_url(listen: &str) -> String {
    let listen = listen.trim();
    let local = if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        listen.to_owned()
    };
    format!("http://{local}/healthz")
}

/// Asks the URL; prints what it found; returns the exit code (0 healthy, 1 not).
pub async fn execute(args: &HealthcheckArgs) -> i32 {
    let url = match &args.url {
        Some(url) => url.clone(),
        None => {
            healthz_url(&std::env::var(LISTEN_ENV).unwrap_or_else(|_| DEFAULT_LISTEN.to_owned()))
        }
    };
    if !reqwest::Url::parse(&url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
        eprintln!("unhealthy: {url:?} is not an http:// URL: write http://host:port/healthz");
        return super::exit::FAILED;
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout.max(1)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("unhealthy: cannot build an HTTP client: {e}");
            return super::exit::FAILED;
        }
    };
    match client.get(&url).send().await {
        Ok(answer) if answer.status() == reqwest::StatusCode::OK => {
            println!("healthy: {url} answered 200");
            super::exit::OK
        }
        Ok(answer) => {
            let status = answer.status();
            let body = answer.text().await.unwrap_or_default();
            let body: String = body.trim().chars().take(500).collect();
            eprintln!("unhealthy: {url} answered {status}: {body}");
            super::exit::FAILED
        }
        Err(e) => {
            eprintln!(
                "unhealthy: nothing answered at {url} ({}); is `tally daemon` running and listening there?",
                if e.is_timeout() {
                    format!("no answer within {} s", args.timeout.max(1))
                } else if e.is_connect() {
                    "connection refused".to_owned()
                } else {
                    e.to_string()
                }
            );
            super::exit::FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_asked_on_loopback() {
        assert_eq!(healthz_url("0.0.0.0:9464"), "http://127.0.0.1:9464/healthz");
        assert_eq!(healthz_url("[::]:9464"), "http://[::1]:9464/healthz");
        assert_eq!(
            healthz_url("127.0.0.1:9000"),
            "http://127.0.0.1:9000/healthz"
        );
    }
}
