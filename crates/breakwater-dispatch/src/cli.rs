//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::operations::{Operator, CHUNK};
use crate::server::StoreUse;
use crate::store::{ActionFilter, ActionStatus, ReplayState};

/// Entity events to webhooks through per-endpoint circuit breakers, durably.
#[derive(Debug, Parser)]
#[command(name = "breakwater", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A loopback socket address: the demo serves nothing beyond this machine.
fn loopback(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|e| format!("not a socket address \"ip:port\" ({e})"))?;
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(format!(
            "{} is not a loopback address; the demo listens on loopback only (e.g. 127.0.0.1:9464)",
            addr.ip()
        ))
    }
}

/// A fleet size within the demo's bounds.
fn fleet_size(text: &str) -> Result<usize, String> {
    use crate::demo::fleet::{MAX_INSTANCES, MIN_INSTANCES};
    let n: usize = text
        .parse()
        .map_err(|e| format!("not a number of instances ({e})"))?;
    if (MIN_INSTANCES..=MAX_INSTANCES).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "a fleet has {MIN_INSTANCES} to {MAX_INSTANCES} instances, not {n}"
        ))
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the service at work on loopback: a healthy, a flaky and a
    /// dead-then-recovering receiver, a live table, a summary.
    Demo {
        /// How long to generate events, in seconds (4 to 86400).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(4..=86_400))]
        duration: u64,
        /// Where `/metrics` (and the whole API) is served meanwhile: a
        /// loopback address. With `--fleet`, the first instance's (bw-1)
        /// address; the others take free ports.
        #[arg(long, default_value = "127.0.0.1:9464", value_parser = loopback)]
        listen: SocketAddr,
        /// Run N `serve` processes (2 to 8) on a throwaway PostgreSQL
        /// cluster instead of one on SQLite, and kill one of them with
        /// SIGKILL a third of the way in; the summary checks that nothing
        /// was lost. Needs PostgreSQL's server programs (Debian: `apt-get
        /// install postgresql`).
        #[arg(long, value_name = "N", value_parser = fleet_size)]
        fleet: Option<usize>,
    },
    /// Run the service.
    Serve {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a configuration file; prints every problem with its key path and line.
    CheckConfig {
        /// The configuration file (TOML).
        file: PathBuf,
    },
    /// Bring the store's schema up to date (SQLite file or Postgres
    /// database) and exit; `serve` does it too at start.
    Migrate {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Manage the dead-letter table.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        command: DlqCommand,
    },
}

/// `dlq` commands. Each write is audited (actor `cli`), and goes through
/// the same code as the HTTP API's.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first.
    List {
        /// The configuration file (for the store's path).
        #[arg(long)]
        config: PathBuf,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only this endpoint's (`scheme://host:port`).
        #[arg(long)]
        endpoint: Option<String>,
        /// Only this observer's.
        #[arg(long)]
        observer: Option<String>,
    },
    /// Queue dead letters for delivery again: the given action ids, or
    /// `--all` (as a replay job, run here to its end).
    Replay {
        /// The configuration file (for the store's path).
        #[arg(long)]
        config: PathBuf,
        /// Every dead letter (narrowed by `--endpoint`, `--observer`).
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// With `--all`: only this endpoint's.
        #[arg(long, requires = "all")]
        endpoint: Option<String>,
        /// With `--all`: only this observer's.
        #[arg(long, requires = "all")]
        observer: Option<String>,
        /// Action ids.
        ids: Vec<i64>,
    },
    /// Delete dead letters, with their attempts: the given action ids, or
    /// `--all`.
    Purge {
        /// The configuration file (for the store's path).
        #[arg(long)]
        config: PathBuf,
        /// Every dead letter (narrowed by `--endpoint`, `--observer`).
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// With `--all`: only this endpoint's.
        #[arg(long, requires = "all")]
        endpoint: Option<String>,
        /// With `--all`: only this observer's.
        #[arg(long, requires = "all")]
        observer: Option<String>,
        /// Action ids.
        ids: Vec<i64>,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BREAKWATER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::log_line::OneLine { ansi })
        .with_ansi(ansi)
        .try_init();
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs one command.
///
/// # Errors
///
/// Whatever made the command fail.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { file } => Ok(check_config(&file)),
        Command::Serve { config } => {
            init_tracing();
            runtime()?.block_on(crate::server::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            duration,
            listen,
            fleet,
        } => {
            if std::env::var_os("BREAKWATER_LOG").is_some() {
                init_tracing();
            }
            let duration = std::time::Duration::from_secs(duration);
            let ok = match fleet {
                None => runtime()?.block_on(crate::demo::run(crate::demo::DemoOptions {
                    duration,
                    listen,
                }))?,
                Some(instances) => runtime()?.block_on(crate::demo::fleet::run(
                    crate::demo::fleet::FleetOptions {
                        instances,
                        duration,
                        listen,
                    },
                ))?,
            };
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Migrate { config } => {
            init_tracing();
            runtime()?.block_on(migrate(&config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { command } => {
            // Logs on stderr, the listing on stdout: an older file being
            // brought up to date says so.
            init_tracing();
            runtime()?.block_on(dlq(command))
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(c) => {
            println!(
                "{}: ok ({} observer(s), {} endpoint(s))",
                file.display(),
                c.observers.len(),
                c.endpoints().len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            for p in &e.problems {
                println!("{}: {p}", file.display());
            }
            println!("{} problem(s)", e.problems.len());
            ExitCode::FAILURE
        }
    }
}

/// `breakwater migrate --config FILE`.
async fn migrate(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    match &config.store {
        crate::config::StoreLocation::Sqlite(file) => {
            // Opening the file brings it up to date (logged when it was
            // older); claims are left alone, as for any tool.
            let store = crate::store::SqliteStore::open_shared(file)?;
            crate::store::Store::close(&store).await;
            println!("{}: up to date", file.display());
        }
        crate::config::StoreLocation::Postgres(url) => {
            let options = crate::config::postgres_options(
                url,
                config.store_password_env.as_deref(),
                &config.store_schema,
                &config.fleet,
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            let done = crate::store::PostgresStore::migrate(&options).await?;
            if done.from == done.to {
                println!(
                    "{url} schema {}: at version {}, up to date",
                    options.schema, done.to
                );
            } else {
                println!(
                    "{url} schema {}: migrated from version {} to {}",
                    options.schema, done.from, done.to
                );
            }
        }
    }
    Ok(())
}

/// Dead letters of `endpoint` and `observer` (each when given).
fn dead_letters(endpoint: Option<String>, observer: Option<String>) -> ActionFilter {
    ActionFilter {
        status: Some(ActionStatus::DeadLettered),
        endpoint,
        observer,
        ..ActionFilter::default()
    }
}

async fn dlq(command: DlqCommand) -> anyhow::Result<ExitCode> {
    let open = |path: &PathBuf| {
        let path = path.clone();
        async move {
            let config = Config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
            let (store, _) = crate::server::open_store(&config, StoreUse::Tool).await?;
            anyhow::Ok(store)
        }
    };
    // Ids asked for that were not dead letters: the command fails.
    let missed = |asked: usize, done: u64, verb: &str, what: &str| {
        let missed = asked.saturating_sub(usize::try_from(done).unwrap_or(usize::MAX));
        if missed > 0 {
            eprintln!(
                "{missed} of the {asked} id(s) given are not {what}; nothing {verb} for them"
            );
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    };
    match command {
        DlqCommand::List {
            config,
            limit,
            endpoint,
            observer,
        } => {
            let store = open(&config).await?;
            let filter = dead_letters(endpoint, observer);
            let mut shown = 0;
            let mut before = None;
            while shown < limit {
                let page = store
                    .actions(&filter, before, (limit - shown).min(CHUNK))
                    .await?;
                for d in &page.actions {
                    println!(
                        "{}\t{}\t{}\t{}\tattempts={}\t{}",
                        d.id,
                        d.event_id,
                        d.observer,
                        d.endpoint,
                        d.attempts,
                        d.last_error.as_deref().unwrap_or("")
                    );
                }
                shown += page.actions.len();
                match page.next {
                    Some(next) if !page.actions.is_empty() => before = Some(next),
                    _ => break,
                }
            }
            if shown == limit && shown > 0 {
                println!("{shown} dead letter(s) shown, the newest; there may be more (--limit)");
            } else {
                println!("{shown} dead letter(s)");
            }
            store.close().await;
        }
        DlqCommand::Replay {
            config,
            all,
            endpoint,
            observer,
            mut ids,
        } => {
            if !all && ids.is_empty() {
                anyhow::bail!(
                    "give the ids of the actions to replay, or --all for every dead letter"
                );
            }
            let store = open(&config).await?;
            let op = Operator::cli(store.clone());
            let code = if all {
                let interrupted = async {
                    // Without a handler, Ctrl-C ends the process as before.
                    if tokio::signal::ctrl_c().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                let job = op
                    .replay_all(dead_letters(endpoint, observer), interrupted)
                    .await;
                store.close().await;
                let job = job?;
                println!(
                    "{} dead letter(s) queued for delivery again (replay job {}, {})",
                    job.replayed,
                    job.id,
                    job.state.as_str()
                );
                if job.state == ReplayState::Finished {
                    ExitCode::SUCCESS
                } else {
                    eprintln!(
                        "the replay job stopped: {}",
                        job.error.as_deref().unwrap_or(job.state.as_str())
                    );
                    ExitCode::FAILURE
                }
            } else {
                ids.sort_unstable();
                ids.dedup();
                let n = op.replay_dead_letters(&ids).await;
                store.close().await;
                let n = n?;
                println!("{n} dead letter(s) queued for delivery again");
                missed(ids.len(), n, "queued", "dead letters")
            };
            return Ok(code);
        }
        DlqCommand::Purge {
            config,
            all,
            endpoint,
            observer,
            mut ids,
        } => {
            if !all && ids.is_empty() {
                anyhow::bail!("give the ids of the dead letters to delete, or --all for every one");
            }
            let store = open(&config).await?;
            let op = Operator::cli(store.clone());
            if all {
                let n = op.purge(dead_letters(endpoint, observer)).await;
                store.close().await;
                println!("{} dead letter(s) deleted", n?);
                return Ok(ExitCode::SUCCESS);
            }
            ids.sort_unstable();
            ids.dedup();
            let n = op.purge_ids(&ids).await;
            store.close().await;
            let n = n?;
            println!("{n} dead letter(s) deleted");
            return Ok(missed(ids.len(), n, "deleted", "dead letters"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
