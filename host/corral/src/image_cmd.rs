//! `corral image build`: the default agent image, through the Docker
//! Engine API.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use corral_sandbox::{AgentImage, Docker};

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Build (or find up to date) the agent image; print its tag.
    Build {
        /// The image's directory: Dockerfile, passwd, group.
        #[arg(long, default_value = "agent-image")]
        dir: PathBuf,
        /// The static musl `corral-agent` (`cargo xtask build-agent`).
        #[arg(
            long,
            default_value = "target/x86_64-unknown-linux-musl/release/corral-agent"
        )]
        binary: PathBuf,
    },
}

pub fn run(cmd: ImageCmd) -> Result<u8> {
    let ImageCmd::Build { dir, binary } = cmd;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let tag = rt.block_on(async {
        let docker = Docker::connect().await?;
        AgentImage { dir, binary }
            .build(&docker, |line| eprintln!("{line}"))
            .await
    })?;
    println!("{tag}");
    Ok(0)
}
