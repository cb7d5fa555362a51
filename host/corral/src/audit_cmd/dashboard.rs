//! `corral audit dashboard`: the audit dashboard over a log file, without
//! a host: for an auditor handed a copy of the log. Read-only; there is no
//! live stream (nothing writes the copy) and no policy text (the records
//! carry the policy ids and the set's hash).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use corral_web::{Dashboard, Metrics, Token, WebConfig};

use super::AuditPath;

#[derive(Args)]
pub struct DashboardArgs {
    /// Where to listen; anything but loopback needs a token.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// A file (mode 0600) holding the token requests must bear.
    #[arg(long, value_name = "FILE", conflicts_with = "token_env")]
    token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    #[arg(long, value_name = "VAR")]
    token_env: Option<String>,
    #[command(flatten)]
    log: AuditPath,
}

pub fn run(args: DashboardArgs) -> Result<u8> {
    // Refused here rather than served empty: a wrong path is a mistake.
    corral_audit::AuditReader::open(&args.log.path)?;
    let token = match (&args.token_file, &args.token_env) {
        (Some(file), _) => Some(Token::from_file(file)?),
        (None, Some(var)) => {
            let Ok(value) = std::env::var(var) else {
                bail!("--token-env {var}: the variable is not set");
            };
            Some(Token::new(&value, &format!("--token-env {var}"))?)
        }
        (None, None) => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let server = corral_web::serve(
            WebConfig {
                listen: args.listen,
                token,
            },
            Arc::new(Metrics::new()),
            Some(Dashboard {
                audit: args.log.path.clone(),
                policies: None,
                live: false,
            }),
        )
        .await?;
        let shutdown = crate::ShutdownSignals::listen();
        println!("web http://{}/", server.addr());
        println!("ready");
        shutdown.wait().await;
        drop(server);
        anyhow::Ok(0)
    })
}
