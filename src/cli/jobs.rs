//! The long-running subcommands: building the demo shop and importing files.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use super::{is_terminal, load_config, remove_sqlite, start};
use crate::app::App;
use crate::demo::{DemoOptions, generate};
use crate::security::Role;

/// `huiyuan demo`: a fresh SQLite shop, an admin key, then serve it.
pub async fn demo(config: &Option<PathBuf>, db: PathBuf, members: usize, seed: u64, port: u16, no_serve: bool) -> anyhow::Result<()> {
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
        "Demo shop ready in {:.1} s: {} members, {} orders (+{} guest), {} refunds, {} events, {} SKUs",
        s.elapsed.as_secs_f64(),
        s.members,
        s.orders,
        s.guest_orders,
        s.refunds,
        s.events,
        s.skus
    );
    let (key, _) = app.create_key(Role::Admin, "demo-admin").await?;
    if no_serve {
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

