//! CLV fit benchmark on UCI Online Retail, compared with lifetimes by `benches/clv.sh`.
//!
//! Builds the repeat-purchase summaries (customers with a CustomerID, invoices not starting with "C",
//! amount = Quantity × UnitPrice in pence as fen, purchase day = the InvoiceDate's day, as_of = the day after
//! the last invoice), writes them to `$CLV_OUT/summary.csv`, fits BG/NBD and Gamma-Gamma `CLV_REPS` times
//! (default 30) and writes the best fit times (fit only: no CSV parsing, no summarising) and the fitted
//! parameters to `$CLV_OUT/rust.json`.
//!
//! Environment: `CLV_DATA` (path of online_retail.csv.gz, default `../../../shared/data/online_retail/
//! online_retail.csv.gz` from this crate), `CLV_OUT` (default `target/clv-bench` under the workspace).

use chrono::{Days, NaiveDate};
use flate2::read::GzDecoder;
use huiyuan_analytics::clv::{ClvParams, Purchase, RepeatSummary, fit_bgnbd, fit_gamma_gamma, score, summarize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data = std::env::var("CLV_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("../shared/data/online_retail/online_retail.csv.gz"));
    let out = std::env::var("CLV_OUT").map(PathBuf::from).unwrap_or_else(|_| root.join("target/clv-bench"));
    let reps: usize = std::env::var("CLV_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    if !data.exists() {
        return Err(format!("missing {} (set CLV_DATA)", data.display()).into());
    }
    std::fs::create_dir_all(&out)?;

    let t0 = Instant::now();
    let (ids, summaries, as_of) = load(&data)?;
    let load_s = t0.elapsed().as_secs_f64();
    let mut w = csv::Writer::from_path(out.join("summary.csv"))?;
    w.write_record(["customer_id", "frequency", "recency", "T", "monetary_value"])?;
    for (id, s) in ids.iter().zip(&summaries) {
        w.write_record([
            id.to_string(),
            s.frequency.to_string(),
            s.recency.to_string(),
            s.age.to_string(),
            s.monetary_value.to_string(),
        ])?;
    }
    w.flush()?;

    let params = ClvParams::default();
    let mut best_bg = f64::INFINITY;
    let mut best_gg = f64::INFINITY;
    let mut bg = None;
    let mut gg = None;
    for _ in 0..reps {
        let t = Instant::now();
        let f = fit_bgnbd(&summaries, &params)?;
        best_bg = best_bg.min(t.elapsed().as_secs_f64());
        bg = Some(f);
        let t = Instant::now();
        let f = fit_gamma_gamma(&summaries, &params)?;
        best_gg = best_gg.min(t.elapsed().as_secs_f64());
        gg = Some(f);
    }
    let (bg, gg) = (bg.ok_or("no repetitions")?, gg.ok_or("no repetitions")?);
    // Scoring every member, for the record (not compared: lifetimes' CLV is a different call).
    let t = Instant::now();
    let mut total_clv: i64 = 0;
    for s in &summaries {
        total_clv += score(&bg.params, Some(&gg.params), s, &params)?.clv_fen;
    }
    let score_s = t.elapsed().as_secs_f64();

    let report = serde_json::json!({
        "customers": summaries.len(),
        "as_of": as_of.to_string(),
        "repetitions": reps,
        "load_and_summarize_s": load_s,
        "bgnbd_fit_best_s": best_bg,
        "gamma_gamma_fit_best_s": best_gg,
        "score_all_s": score_s,
        "total_clv_fen_12m": total_clv,
        "bgnbd": bg,
        "gamma_gamma": gg,
    });
    std::fs::File::create(out.join("rust.json"))?.write_all(serde_json::to_string_pretty(&report)?.as_bytes())?;
    println!(
        "rust: {} customers (as of {as_of}); BG/NBD fit best of {reps}: {:.3} ms ({} iterations, LL {:.4}); \
         Gamma-Gamma fit: {:.3} ms ({} customers, {} iterations); scoring all members: {:.1} ms",
        summaries.len(),
        best_bg * 1e3,
        bg.iterations,
        bg.log_likelihood,
        best_gg * 1e3,
        gg.n_customers,
        gg.iterations,
        score_s * 1e3
    );
    Ok(())
}

/// Per-customer purchases from the gzipped CSV, summarised as of the day after the last kept invoice.
fn load(path: &PathBuf) -> Res<(Vec<i64>, Vec<RepeatSummary>, NaiveDate)> {
    let mut rdr = csv::Reader::from_reader(GzDecoder::new(std::fs::File::open(path)?));
    let h = rdr.headers()?.clone();
    let col = |name: &str| h.iter().position(|c| c == name).ok_or_else(|| format!("no column {name}"));
    let (c_inv, c_qty, c_date, c_price, c_cust) =
        (col("InvoiceNo")?, col("Quantity")?, col("InvoiceDate")?, col("UnitPrice")?, col("CustomerID")?);
    let mut by_customer: BTreeMap<i64, Vec<Purchase>> = BTreeMap::new();
    let mut last: Option<NaiveDate> = None;
    for rec in rdr.records() {
        let rec = rec?;
        let cust = rec[c_cust].trim();
        if cust.is_empty() || rec[c_inv].starts_with('C') {
            continue;
        }
        let id = cust.parse::<f64>()? as i64;
        let day = NaiveDate::parse_from_str(rec[c_date].get(..10).ok_or("short date")?, "%Y-%m-%d")?;
        let qty: f64 = rec[c_qty].parse()?;
        let price: f64 = rec[c_price].parse()?;
        let amount_fen = (qty * price * 100.0).round() as i64;
        by_customer.entry(id).or_default().push(Purchase { day, amount_fen });
        last = Some(last.map_or(day, |l| l.max(day)));
    }
    let as_of = last.ok_or("no purchases")?.checked_add_days(Days::new(1)).ok_or("date overflow")?;
    let mut ids = Vec::with_capacity(by_customer.len());
    let mut summaries = Vec::with_capacity(by_customer.len());
    for (id, ps) in by_customer {
        if let Some(s) = summarize(&ps, as_of) {
            ids.push(id);
            summaries.push(s);
        }
    }
    Ok((ids, summaries, as_of))
}
