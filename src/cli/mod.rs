//! The `huiyuan` command line: serve the API, build a demo shop, import files, migrate, manage keys and
//! print stats. Each subcommand is a thin layer over `App`.

mod backtest;
mod jobs;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::app::App;
use crate::config::Config;
use crate::security::Role;

#[derive(Debug, Parser)]
#[command(name = "huiyuan", version, about = "Huiyuan (会员): membership, loyalty and customer-behaviour system")]
pub struct Cli {
    /// Configuration file (TOML); `huiyuan.toml` in the working directory is read if present.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the data lives.
#[derive(Debug, Args, Clone)]
pub struct DbArg {
    /// `sqlite://PATH` or `postgres://…` (env HUIYUAN_DATABASE_URL; default sqlite://huiyuan.db).
    #[arg(long = "db")]
    pub db: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API.
    Serve {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        port: Option<u16>,
        /// Address to bind (default 127.0.0.1).
        #[arg(long)]
        bind: Option<String>,
    },
    /// Build a fresh demo shop in a SQLite file and serve it.
    Demo {
        /// The SQLite file to (re)create.
        #[arg(long = "db", default_value = "huiyuan-demo.db")]
        db: PathBuf,
        #[arg(long, default_value_t = 20_000)]
        members: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Build the shop and exit without serving.
        #[arg(long)]
        no_serve: bool,
    },
    /// Bulk import members, orders or events from CSV or JSON Lines (`.gz` read directly).
    Import {
        #[arg(value_enum)]
        entity: EntityArg,
        file: PathBuf,
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
        /// A built-in mapping: online-retail, generic (orders), rees46 (events).
        #[arg(long)]
        mapping: Option<String>,
        /// Where rejected rows go (default: FILE.rejects.csv in the working directory).
        #[arg(long)]
        rejects: Option<PathBuf>,
        #[command(flatten)]
        db: DbArg,
    },
    /// Apply database migrations.
    Migrate {
        #[command(flatten)]
        db: DbArg,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// The loyalty program.
    Loyalty {
        #[command(subcommand)]
        action: LoyaltyAction,
    },
    /// Run the behaviour analysis (RFM, lifecycle, CLV, churn, purchase cycles, preferences, tags, clusters,
    /// basket rules, funnels, cohorts, KPIs) and store its results as a new run.
    Analyze {
        /// Compute as if today were this day (YYYY-MM-DD, UTC), reading nothing after it (default: today).
        #[arg(long)]
        as_of: Option<String>,
        /// Print the run's summary as JSON (fitted model parameters, diagnostics, metrics).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Counts of members, member orders, guest orders, refunds and events.
    Stats {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key and print it once.
    Create {
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long, default_value = "cli")]
        name: String,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum LoyaltyAction {
    /// Check every member's points ledger; exits non-zero, naming the members, if any invariant fails.
    Verify {
        #[command(flatten)]
        db: DbArg,
    },
    /// Make due pending points available, expire due lots, expire unused coupons past their window and
    /// remind members of coupons about to close (idempotent; safe to run from cron).
    Expire {
        #[command(flatten)]
        db: DbArg,
    },
    /// Replay the shop's history under a draft rule set (and tier program) beside the one in force, writing
    /// nothing: points issued, liability, cost at the redemption rate, and the tier migration matrix.
    Backtest {
        /// The draft earning rules (TOML, or JSON if the file ends in .json).
        #[arg(long)]
        rules: PathBuf,
        /// A draft tier program (TOML or JSON); the tiers in force otherwise.
        #[arg(long)]
        tiers: Option<PathBuf>,
        /// First day of the reported period (YYYY-MM-DD, business time zone; default: a year before --to).
        #[arg(long)]
        from: Option<String>,
        /// Last day replayed and reported (YYYY-MM-DD; default: now).
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EntityArg {
    Members,
    Orders,
    Events,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    Csv,
    Jsonl,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

fn load_config(cli_config: &Option<PathBuf>, db: Option<&str>) -> anyhow::Result<Config> {
    let mut cfg = Config::load(cli_config.as_deref()).context("reading configuration")?;
    if let Some(db) = db {
        cfg.database_url = db.to_string();
    }
    Ok(cfg)
}

async fn start(cfg: Config) -> anyhow::Result<Arc<App>> {
    let url = cfg.database_url.clone();
    Ok(Arc::new(App::start(cfg).await.with_context(|| format!("opening {url}"))?))
}

/// Run the command line; returns the process exit code on success paths.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { db, port, bind } => {
            let mut cfg = load_config(&cli.config, db.db.as_deref())?;
            if let Some(p) = port {
                cfg.port = p;
            }
            if let Some(b) = bind {
                cfg.bind = b;
            }
            let addr = format!("{}:{}", cfg.bind, cfg.port);
            let app = start(cfg).await?;
            let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
            println!("Huiyuan listening on http://{}  (API docs: /docs)", listener.local_addr()?);
            crate::http::serve(app, listener).await?;
        }
        Command::Demo { db, members, seed, port, no_serve } => {
            jobs::demo(&cli.config, db, members, seed, port, no_serve).await?;
        }
        Command::Import { entity, file, format, mapping, rejects, db } => {
            let cfg = load_config(&cli.config, db.db.as_deref())?;
            let app = start(cfg).await?;
            jobs::import(&app, entity, file, format, mapping, rejects).await?;
            app.store.flush().await?;
        }
        Command::Migrate { db } => {
            let cfg = load_config(&cli.config, db.db.as_deref())?;
            let url = cfg.database_url.clone();
            start(cfg).await?;
            println!("{url}: schema is up to date");
        }
        Command::Keys { action: KeysAction::Create { role, name, db } } => {
            let cfg = load_config(&cli.config, db.db.as_deref())?;
            let app = start(cfg).await?;
            let (key, rec) = app.create_key(role, &name).await?;
            eprintln!("Created {} key {} ({}). It is shown only this once:", rec.role, rec.id, rec.name);
            println!("{key}");
        }
        Command::Loyalty { action: LoyaltyAction::Verify { db } } => {
            let cfg = load_config(&cli.config, db.db.as_deref())?;
            let app = start(cfg).await?;
            let r = app.verify_ledgers().await?;
            println!("checked {} ledgers, {} entries", r.members, r.entries);
            if !r.violations.is_empty() {
                for (member, found) in &r.violations {
                    for v in found {
                        eprintln!("member {member}: {v}");
                    }
                }
                bail!("{} members' ledgers break an invariant", r.violations.len());
            }
            println!("every invariant holds");
        }
        Command::Loyalty { action: LoyaltyAction::Expire { db } } => {
            let cfg = load_config(&cli.config, db.db.as_deref())?;
            let app = start(cfg).await?;
            let now = app.now();
            let (members, entries) = app.run_ledger_jobs(now).await?;
            println!("{entries} ledger entries written for {members} members");
            let (expired, reminded) = app.sweep_coupons(now).await?;
            println!("{expired} coupons expired, {reminded} members reminded of coupons expiring soon");
        }
        Command::Loyalty { action: LoyaltyAction::Backtest { rules, tiers, from, to, json, db } } => {
            let cfg = load_config(&cli.config, db.db.as_deref())?;
            let app = start(cfg).await?;
            backtest::run(&app, &rules, tiers.as_deref(), from.as_deref(), to.as_deref(), json).await?;
        }
        Command::Analyze { as_of, json, db } => {
            let cfg = load_config(&cli.config, db.db.as_deref())?;
            let app = start(cfg).await?;
            jobs::analyze(&app, as_of.as_deref(), json).await?;
            app.store.flush().await?;
        }
        Command::Stats { db, json } => {
            let cfg = load_config(&cli.config, db.db.as_deref())?;
            let app = start(cfg).await?;
            let s = app.store.stats().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("members          {:>10}", s.members);
                println!("merged members   {:>10}", s.merged_members);
                println!("member orders    {:>10}", s.member_orders);
                println!("guest orders     {:>10}", s.guest_orders);
                println!("member refunds   {:>10}", s.refunds);
                println!("guest refunds    {:>10}", s.guest_refunds);
                println!("events           {:>10}", s.events);
                println!("  not yet linked {:>10}", s.unlinked_events);
                println!("skus             {:>10}", s.skus);
            }
        }
    }
    Ok(())
}

/// Remove a SQLite database and its WAL companions, so the demo starts fresh.
fn remove_sqlite(path: &std::path::Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("cannot remove {}: {e}", p.display()),
        }
    }
    Ok(())
}

fn is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
