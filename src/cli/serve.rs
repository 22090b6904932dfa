//! `tally serve`: the accountants' review page (src/web/) on `--listen` or `[serve] listen`,
//! until SIGTERM/SIGINT. It needs the database; pushing from the page needs the secrets of the
//! billing systems the approved lines go to, as `tally push` does.

use super::{Load, exit, init_tracing, listen_for_signals};
use crate::problem::{ConfigError, Problem};
use crate::shutdown::Shutdown;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Listen on this address and port (default: serve.listen, 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

pub async fn execute(args: ServeArgs, load: Load<'_>) -> anyhow::Result<i32> {
    let mut settings = load()?;
    if let Some(listen) = args.listen {
        settings.serve.listen = listen;
    }
    let problems: Vec<Problem> = settings
        .serve
        .validate()
        .into_iter()
        .map(|mut p| {
            if p.at == "serve.listen" {
                p.at = "--listen (or serve.listen)".into();
            }
            p
        })
        .collect();
    if !problems.is_empty() {
        return Err(ConfigError(problems).into());
    }
    let address = settings.serve.address().map_err(|p| ConfigError(vec![p]))?;
    init_tracing(&settings, None);
    let store = Store::connect(&settings.database_target()).await?;
    let shutdown = Shutdown::new();
    listen_for_signals(&settings, &shutdown);
    let web = crate::web::Web::new(store, settings)?;
    let stop = shutdown.clone();
    crate::web::serve(web, address, async move { stop.wait().await }).await?;
    Ok(exit::OK)
}
