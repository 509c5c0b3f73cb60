//! The long-running subcommands: building the demo shop and importing files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::{EntityArg, FormatArg, is_terminal, load_config, remove_sqlite, start};
use crate::app::App;
use crate::demo::{DemoOptions, generate};
use crate::import::{self, Entity, Format, ImportOptions};
use crate::security::Role;

/// `huiyuan demo`: a fresh SQLite shop, an admin key, then serve it.
pub async fn demo(
    config: &Option<PathBuf>,
    db: PathBuf,
    members: usize,
    seed: u64,
    port: u16,
    no_serve: bool,
) -> anyhow::Result<()> {
    remove_sqlite(&db)?;
    let url = format!("sqlite://{}", db.display());
    let mut cfg = load_config(config, Some(&url))?;
    // The demo keeps its own key next to its database, whatever the configuration says.
    cfg.secret_key = None;
    cfg.key_file = db.with_extension("key");
    let _ = std::fs::remove_file(&cfg.key_file);
    cfg.port = port;
    let addr = format!("{}:{}", cfg.bind, cfg.port);
    let app: Arc<App> = start(cfg).await?;
    let opts = DemoOptions { members, seed, end: chrono::Utc::now().date_naive(), progress: is_terminal() };
    eprintln!("Building the demo shop in {} ({} members, seed {seed})…", db.display(), members);
    let s = generate(&app, &opts).await.context("building the demo shop")?;
    eprintln!(
        "Demo shop ready in {:.1} s: {} members, {} orders (+{} guest), {} refunds, {} events, {} SKUs; \
         {} loyalty tasks settled, {} ledger entries from maturing and expiry, {} rewards redeemed",
        s.elapsed.as_secs_f64(),
        s.members,
        s.orders,
        s.guest_orders,
        s.refunds,
        s.events,
        s.skus,
        s.loyalty_tasks,
        s.ledger_jobs,
        s.redemptions
    );
    let stages: Vec<String> = s.stages.iter().map(|(n, d)| format!("{n} {:.1} s", d.as_secs_f64())).collect();
    eprintln!("  time by stage: {}", stages.join(", "));
    // The shop's behaviour analysis, so profiles, segments and reports are there from the start.
    let t = std::time::Instant::now();
    let report = app.analyze(opts.end, &|_| {}).await.context("analyzing the demo shop")?;
    eprintln!(
        "Behaviour analysis run {} as of {} in {:.1} s",
        report.run.run_id,
        report.run.as_of,
        t.elapsed().as_secs_f64()
    );
    let (key, _) = app.create_key(Role::Admin, "demo-admin").await?;
    if no_serve {
        app.store.flush().await?;
        println!("admin key: {key}");
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
    let base = format!("http://{}", listener.local_addr()?);
    println!();
    println!("  Huiyuan demo shop:  {base}");
    println!("  API docs:           {base}/docs");
    println!("  Admin API key:      {key}");
    println!();
    println!("  Try:  curl -H 'Authorization: Bearer {key}' {base}/v1/stats");
    println!();
    crate::http::serve(app, listener).await?;
    Ok(())
}

/// `huiyuan import`: read a file, write it through the use cases, report.
pub async fn import(
    app: &App,
    entity: EntityArg,
    file: PathBuf,
    format: Option<FormatArg>,
    mapping: Option<String>,
    rejects: Option<PathBuf>,
) -> anyhow::Result<()> {
    let opts = ImportOptions {
        entity: match entity {
            EntityArg::Members => Entity::Members,
            EntityArg::Orders => Entity::Orders,
            EntityArg::Events => Entity::Events,
        },
        path: file.clone(),
        format: format.map(|f| match f {
            FormatArg::Csv => Format::Csv,
            FormatArg::Jsonl => Format::Jsonl,
        }),
        mapping,
        reject_path: rejects,
        progress: is_terminal(),
    };
    // Loyalty work of the imported history is settled once at the end, each member's ledger loaded once.
    app.defer_loyalty(true);
    let s = import::run(app, &opts).await.with_context(|| format!("importing {}", file.display()))?;
    app.defer_loyalty(false);
    let t = std::time::Instant::now();
    let settled = app.settle_loyalty().await?;
    let (_, matured) = app.run_ledger_jobs(app.now()).await?;
    println!("rows read   {:>10}", s.read);
    println!("imported    {:>10}", s.imported);
    println!("duplicates  {:>10}  (already stored; skipped)", s.duplicates);
    println!("skipped     {:>10}", s.skipped);
    println!("rejected    {:>10}", s.rejected);
    println!("time        {:>10.2} s  ({:.0} rows/s)", s.elapsed.as_secs_f64(), s.rows_per_sec());
    println!(
        "loyalty     {:>10} tasks settled, {matured} ledger entries from maturing and expiry ({:.2} s)",
        settled,
        t.elapsed().as_secs_f64()
    );
    for n in &s.notes {
        println!("note: {n}");
    }
    if let Some(r) = &s.reject_file {
        println!("rejected rows, with line numbers and reasons: {}", r.display());
        show_rejects(r, s.rejected);
    }
    Ok(())
}

/// How many rejected rows `import` shows on stderr; the rest are only in the reject file.
const SHOWN_REJECTS: usize = 10;

/// Print the first rejected rows of the reject file (`line,code,field,reason,raw`) to stderr, so the user
/// sees what went wrong without opening it. The import itself succeeded, so a reject file that cannot be
/// read is only a warning.
fn show_rejects(path: &Path, rejected: u64) {
    match print_first_rejects(path) {
        Ok(shown) if rejected > shown => eprintln!("… and {} more in {}", rejected - shown, path.display()),
        Ok(_) => {}
        Err(e) => eprintln!("warning: cannot read the reject file {}: {e}", path.display()),
    }
}

/// Print up to [`SHOWN_REJECTS`] rows as `line N: <code> (<field>): <reason>`; returns how many.
fn print_first_rejects(path: &Path) -> Result<u64, csv::Error> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_path(path)?;
    let mut shown = 0;
    for rec in rdr.records().take(SHOWN_REJECTS) {
        let rec = rec?;
        let col = |i| rec.get(i).unwrap_or("");
        let (line, code, field, reason) = (col(0), col(1), col(2), col(3));
        let field = if field.is_empty() { String::new() } else { format!(" ({field})") };
        // The rows of a rejected order all give the reason of the row at fault, which starts `line N: `.
        let own = format!("line {line}: ");
        let reason = reason.strip_prefix(own.as_str()).unwrap_or(reason);
        eprintln!("line {line}: {code}{field}: {reason}");
        shown += 1;
    }
    Ok(shown)
}

/// `huiyuan analyze`: run the whole analysis with a progress bar (a spinner per stage on a terminal), then
/// print the run's summary (or all of it as JSON).
pub async fn analyze(app: &App, as_of: Option<&str>, json: bool) -> anyhow::Result<()> {
    let as_of = match as_of {
        Some(s) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .with_context(|| format!("--as-of `{s}` is not a date (YYYY-MM-DD)"))?,
        None => app.now().date_naive(),
    };
    let bar = if is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] analyze as of {prefix}: {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_prefix(as_of.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let progress = {
        let bar = bar.clone();
        move |stage: &str| bar.set_message(stage.to_string())
    };
    let report = app.analyze(as_of, &progress).await.with_context(|| format!("analyzing as of {as_of}"))?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("analysis run {} as of {}: {}", report.run.run_id, report.run.as_of, report.run.status);
    if let Some(summary) = &report.run.summary {
        crate::analytics::print_summary(summary);
    }
    println!("stages:");
    for (stage, secs) in &report.stages {
        println!("  {stage:<22} {secs:>8.2} s");
    }
    let reads: Vec<String> = report.reads.iter().map(|(read, secs)| format!("{read} {secs:.2} s")).collect();
    println!("store reads within load (two at a time): {}", reads.join(", "));
    Ok(())
}
