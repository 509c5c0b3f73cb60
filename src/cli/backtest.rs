//! `huiyuan loyalty backtest`: replay the shop's history under a draft programme beside the one in force,
//! and print what each would have issued, owed and cost, and where members' tiers would move.

use std::path::Path;

use anyhow::{Context, bail};
use chrono::{DateTime, Months, NaiveDate, TimeZone, Utc};

use crate::app::App;
use crate::loyalty::backtest::{Backtest, ProgrammeOutcome};
use crate::loyalty::rules::RuleSet;
use crate::loyalty::tiers::TierProgram;

/// Read a TOML or JSON file (by extension; TOML otherwise) with the parser given for each.
fn read_draft<T, E: std::fmt::Display>(
    path: &Path,
    toml: impl Fn(&str) -> Result<T, E>,
    json: impl Fn(&str) -> Result<T, E>,
) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let parsed =
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) { json(&text) } else { toml(&text) };
    parsed.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Local midnight of a `YYYY-MM-DD` date in the business time zone.
fn local_midnight(date: &str, tz: chrono_tz::Tz, flag: &str) -> anyhow::Result<DateTime<Utc>> {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .with_context(|| format!("{flag}: expected YYYY-MM-DD, got `{date}`"))?;
    let local = tz
        .from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
        .earliest()
        .with_context(|| format!("{flag}: {date} has no midnight in {tz}"))?;
    Ok(local.with_timezone(&Utc))
}

/// Run the backtest and print it (a table, or JSON).
pub async fn run(
    app: &App,
    rules: &Path,
    tiers: Option<&Path>,
    from: Option<&str>,
    to: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let draft_rules = read_draft(rules, RuleSet::from_toml, RuleSet::from_json)?;
    let draft_tiers = tiers.map(|p| read_draft(p, TierProgram::from_toml, TierProgram::from_json)).transpose()?;
    let tz = app.ledger_config()?.tz;
    // `--to DATE` includes that day: the replay runs to the next local midnight.
    let to = match to {
        Some(d) => local_midnight(d, tz, "--to")? + chrono::Duration::days(1),
        None => app.now(),
    };
    let from = match from {
        Some(d) => local_midnight(d, tz, "--from")?,
        None => to.checked_sub_months(Months::new(12)).unwrap_or(to),
    };
    if from >= to {
        bail!("--from must be before --to");
    }
    let bar = if super::is_terminal() && !json {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} members replayed [{elapsed_precise}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let report = app.backtest(draft_rules, draft_tiers, from, to, &|n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn yuan(fen: i64) -> String {
    format!("¥{}.{:02}", fen / 100, (fen % 100).abs())
}

fn print_table(r: &Backtest) {
    let (c, d) = (&r.current, &r.draft);
    println!(
        "Backtest of {} members, {} to {} ({}); replayed to {}",
        r.members,
        c.liability.from.format("%Y-%m-%d %H:%M UTC"),
        c.liability.to.format("%Y-%m-%d %H:%M UTC"),
        c.liability.time_zone,
        c.liability.as_of.format("%Y-%m-%d %H:%M UTC"),
    );
    println!(
        "Programmes: current rules v{} / tiers v{}; draft rules v{} / tiers v{}\n",
        c.rule_version, c.tier_program_version, d.rule_version, d.tier_program_version
    );
    println!("{:<34}{:>16}{:>16}{:>16}", "", "current", "draft", "change");
    let row = |label: &str, f: &dyn Fn(&ProgrammeOutcome) -> i64| {
        let (a, b) = (f(c), f(d));
        println!("{label:<34}{a:>16}{b:>16}{:>+16}", b - a);
    };
    let money = |label: &str, f: &dyn Fn(&ProgrammeOutcome) -> i64| {
        let (a, b) = (f(c), f(d));
        println!("{label:<34}{:>16}{:>16}{:>16}", yuan(a), yuan(b), yuan(b - a));
    };
    row("points issued in the period", &|o| o.liability.totals.issued);
    row("points redeemed", &|o| o.liability.totals.redeemed);
    row("points expired", &|o| o.liability.totals.expired);
    row("points reversed by refunds", &|o| o.liability.totals.reversed);
    row("outstanding at the end (liability)", &|o| o.liability.totals.outstanding);
    money("cost of points issued", &|o| o.issued_cost_fen);
    money("cost of the liability", &|o| o.liability.totals.cost_fen);
    row("redemptions not affordable", &|o| o.unaffordable_redemptions as i64);
    println!("\nMembers per tier at the end");
    let mut codes: Vec<&String> = r.current_tiers.iter().chain(&r.draft_tiers).collect();
    codes.dedup();
    let mut seen = std::collections::BTreeSet::new();
    for code in codes.into_iter().filter(|c| seen.insert(*c)) {
        let n = |o: &ProgrammeOutcome| o.tiers.get(code).copied().unwrap_or(0) as i64;
        println!("  {code:<32}{:>16}{:>16}{:>+16}", n(c), n(d), n(d) - n(c));
    }
    println!("\nTier migration (rows: current tier; columns: tier under the draft)");
    print!("  {:<14}", "");
    for t in &r.draft_tiers {
        print!("{t:>12}");
    }
    println!();
    for from in &r.current_tiers {
        print!("  {from:<14}");
        for to in &r.draft_tiers {
            let n = r.migration.iter().find(|m| &m.from == from && &m.to == to).map_or(0, |m| m.members);
            print!("{n:>12}");
        }
        println!();
    }
    if !r.failed.is_empty() {
        println!("\n{} members could not be replayed:", r.failed.len());
        for (m, why) in r.failed.iter().take(20) {
            println!("  member {m}: {why}");
        }
    }
}
