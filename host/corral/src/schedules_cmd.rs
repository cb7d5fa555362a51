//! `corral schedules …`: the `[[schedules]]` of `corral.toml`, when each
//! is next due, and running one now through the running `corral up`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use corral_schedules::{Missed, RunBook};

#[derive(Subcommand)]
pub enum SchedulesCmd {
    /// List the schedules with when each last ran and is next due.
    Ls {
        /// The configuration `corral up` runs with.
        #[arg(long, short, default_value = "corral.toml", env = "CORRAL_CONFIG")]
        config: PathBuf,
        /// How many of each schedule's next times to print.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=100))]
        next: u16,
    },
    /// Send a schedule's message now, through the running `corral up`: it
    /// is decided as `Schedule::"NAME"` and recorded like a timed run, and
    /// does not change when the schedule is next due.
    Run {
        name: String,
        /// The configuration `corral up` runs with (to find its control
        /// socket).
        #[arg(long, short, default_value = "corral.toml", env = "CORRAL_CONFIG")]
        config: PathBuf,
    },
}

pub fn run(cmd: SchedulesCmd) -> Result<u8> {
    match cmd {
        SchedulesCmd::Ls { config, next } => ls(&config, usize::from(next)),
        SchedulesCmd::Run { name, config } => {
            let socket = corral_host::HostConfig::load(&config)?.0.control_socket();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async {
                let mut client = corral_channels::terminal::ChatClient::connect(&socket).await?;
                match client.run_schedule(&name).await? {
                    Ok(done) => {
                        println!("{done}");
                        Ok(0)
                    }
                    Err(e) => bail!("{e}"),
                }
            })
        }
    }
}

fn ls(config_path: &std::path::Path, next: usize) -> Result<u8> {
    let (config, _) = corral_host::HostConfig::load(config_path)?;
    if config.schedules.is_empty() {
        println!(
            "{} has no [[schedules]]; add one with a name, cron, agent and message",
            config_path.display()
        );
        return Ok(0);
    }
    let schedules = corral_schedules::check_all(&config.schedules)?;
    let book = RunBook::open(&config.schedules_file())?;
    let now = jiff::Timestamp::now();
    let mut rows = vec![
        [
            "NAME",
            "AGENT",
            "CRON",
            "TIME ZONE",
            "REPLY TO",
            "MISSED",
            "LAST HANDLED",
            "NEXT",
        ]
        .map(String::from),
    ];
    let mut later = Vec::new();
    for s in &schedules {
        let upcoming = s.upcoming(now, next);
        let last = book
            .last(&s.name)
            .map(|t| s.local(t).to_string())
            .unwrap_or_else(|| "never".into());
        rows.push([
            s.name.clone(),
            s.agent.clone(),
            s.cron_text.clone(),
            s.time_zone_name.clone(),
            s.reply_to.to_string(),
            match s.missed {
                Missed::Skip => "skip".into(),
                Missed::RunOnce => "run-once".into(),
            },
            last,
            upcoming
                .first()
                .map_or_else(|| "never again".into(), |z| z.to_string()),
        ]);
        later.push((
            s.name.clone(),
            upcoming.into_iter().skip(1).collect::<Vec<_>>(),
        ));
    }
    print_table(&rows);
    for (name, times) in later.iter().filter(|(_, t)| !t.is_empty()) {
        println!("\n{name}, then:");
        for t in times {
            println!("  {t}");
        }
    }
    Ok(0)
}

fn print_table<const N: usize>(rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
