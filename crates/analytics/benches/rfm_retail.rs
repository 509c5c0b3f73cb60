//! RFM + lifecycle over UCI Online Retail, compared with the same RFM in DuckDB SQL by `benches/rfm_duckdb.sh`.
//!
//! Orders are read the way `benches/clv.rs` reads purchases: rows with a CustomerID, invoices not starting
//! with "C", line amount = Quantity × UnitPrice in pence (as fen), rounded per line. Here an invoice is one
//! order: its amount is the sum of its lines, its day the earliest InvoiceDate day of its lines. `as_of` is
//! the day after the last invoice and the RFM window the kernel default (365 days ending at `as_of`).
//!
//! The orders are written to `$RFM_OUT/orders.csv` (`customer_id,invoice_no,day,amount_fen`, the input of the
//! DuckDB side). Then, `RFM_REPS` times (default 200), the whole path from those in-memory order rows is
//! timed: grouping per member (last purchase, orders and money in the window, first purchase), the `rfm`
//! kernel and the `lifecycle` kernel (registered = first invoice day, as the product's import registers
//! Online Retail customers; last activity = last purchase, the data having no other events). Best and
//! median wall and process CPU time are written to `$RFM_OUT/rust.json` with the segment and stage counts;
//! per-member scores, segments and stages go to `$RFM_OUT/rust_members.csv`.
//!
//! Environment: `RFM_DATA` (path of online_retail.csv.gz, default `../shared/data/online_retail/
//! online_retail.csv.gz` from the workspace root), `RFM_OUT` (default `target/rfm-duckdb-bench`), `RFM_REPS`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{Days, NaiveDate};
use flate2::read::GzDecoder;
use huiyuan_analytics::lifecycle::{LifecycleInput, LifecycleParams, LifecycleResult, LifecycleStage, classify};
use huiyuan_analytics::rfm::{RfmInput, RfmParams, RfmReport, rfm};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// One order (invoice) as the store would hold it.
#[derive(Debug, Clone)]
struct Order {
    customer: i64,
    invoice: String,
    day: NaiveDate,
    amount_fen: i64,
}

/// Process CPU seconds, all threads (clock_gettime CLOCK_PROCESS_CPUTIME_ID, the clock Python's
/// `time.process_time` reads, so both sides of the comparison count CPU the same way); NaN if unavailable.
fn cpu_now() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes one timespec through the pointer, which points to a live local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc == 0 { ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9 } else { f64::NAN }
}

/// Wall and CPU seconds of repeated runs of one step.
#[derive(Default)]
struct Times {
    wall: Vec<f64>,
    cpu: Vec<f64>,
}

impl Times {
    fn push(&mut self, wall: f64, cpu: f64) {
        self.wall.push(wall);
        self.cpu.push(cpu);
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "wall_best_s": best(&self.wall),
            "wall_median_s": median(&self.wall),
            "cpu_best_s": best(&self.cpu),
            "cpu_median_s": median(&self.cpu),
        })
    }
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A clock started at a point: wall and CPU elapsed since.
struct Clock(Instant, f64);

impl Clock {
    fn start() -> Self {
        Self(Instant::now(), cpu_now())
    }
    /// (wall, cpu) since start, and restarts.
    fn lap(&mut self) -> (f64, f64) {
        let (w, c) = (self.0.elapsed().as_secs_f64(), cpu_now() - self.1);
        *self = Self::start();
        (w, c)
    }
}

fn main() -> Res<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data = std::env::var("RFM_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("../shared/data/online_retail/online_retail.csv.gz"));
    let out = std::env::var("RFM_OUT").map(PathBuf::from).unwrap_or_else(|_| root.join("target/rfm-duckdb-bench"));
    let reps: usize = std::env::var("RFM_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(200).max(1);
    if !data.exists() {
        return Err(format!("missing {} (set RFM_DATA)", data.display()).into());
    }
    std::fs::create_dir_all(&out)?;

    let t0 = Instant::now();
    let orders = load(&data)?;
    let load_s = t0.elapsed().as_secs_f64();
    let last = orders.iter().map(|o| o.day).max().ok_or("no orders")?;
    let as_of = last.checked_add_days(Days::new(1)).ok_or("date overflow")?;
    let rfm_params = RfmParams::default();
    let life_params = LifecycleParams::default();
    let mut w = csv::Writer::from_path(out.join("orders.csv"))?;
    w.write_record(["customer_id", "invoice_no", "day", "amount_fen"])?;
    for o in &orders {
        w.write_record([o.customer.to_string(), o.invoice.clone(), o.day.to_string(), o.amount_fen.to_string()])?;
    }
    w.flush()?;

    let (mut t_group, mut t_rfm, mut t_life, mut t_total) =
        (Times::default(), Times::default(), Times::default(), Times::default());
    let mut last_run = None;
    for _ in 0..reps {
        drop(last_run.take());
        let mut whole = Clock::start();
        let mut step = Clock::start();
        let (rfm_in, life_in) = group(&orders, as_of, &rfm_params);
        let (w, c) = step.lap();
        t_group.push(w, c);
        let report = rfm(&rfm_in, as_of, &rfm_params);
        let (w, c) = step.lap();
        t_rfm.push(w, c);
        let stages = classify(&life_in, as_of, &life_params)?;
        let (w, c) = step.lap();
        t_life.push(w, c);
        let (w, c) = whole.lap();
        t_total.push(w, c);
        last_run = Some((rfm_in, report, stages));
    }
    let (rfm_in, report, stages) = last_run.ok_or("no repetitions")?;
    // Group + RFM alone, per repetition: the part DuckDB's query also does.
    let rfm_only = Times {
        wall: t_group.wall.iter().zip(&t_rfm.wall).map(|(a, b)| a + b).collect(),
        cpu: t_group.cpu.iter().zip(&t_rfm.cpu).map(|(a, b)| a + b).collect(),
    };

    write_members(&out.join("rust_members.csv"), &report, &stages)?;
    let mut stage_counts: HashMap<&str, u64> = LifecycleStage::ALL.iter().map(|s| (s.code(), 0)).collect();
    for s in stages.iter().filter_map(|r| r.stage) {
        *stage_counts.entry(s.code()).or_default() += 1;
    }
    let segments: serde_json::Map<String, serde_json::Value> =
        report.summary.segments.iter().map(|s| (s.code.to_string(), s.count.into())).collect();
    let in_window = orders.iter().filter(|o| (as_of - o.day).num_days() < i64::from(rfm_params.window_days)).count();
    let result = serde_json::json!({
        "orders": orders.len(),
        "orders_in_window": in_window,
        "members": rfm_in.len(),
        "as_of": as_of.to_string(),
        "window_days": rfm_params.window_days,
        "scored": report.summary.scored,
        "unscored": report.summary.unscored,
        "segments": segments,
        "stages": stage_counts,
        "repetitions": reps,
        "threads": rayon::current_num_threads(),
        "load_s": load_s,
        "group": t_group.json(),
        "rfm": t_rfm.json(),
        "lifecycle": t_life.json(),
        "group_rfm": rfm_only.json(),
        "total": t_total.json(),
    });
    std::fs::File::create(out.join("rust.json"))?.write_all(serde_json::to_string_pretty(&result)?.as_bytes())?;
    println!(
        "rust: {} orders ({in_window} in the window), {} members, as of {as_of}; {} scored, {} unscored; \
         load {load_s:.2} s (not timed); best of {reps} on {} rayon threads:",
        orders.len(),
        rfm_in.len(),
        report.summary.scored,
        report.summary.unscored,
        rayon::current_num_threads()
    );
    for (name, t) in [
        ("group per member", &t_group),
        ("rfm kernel", &t_rfm),
        ("lifecycle kernel", &t_life),
        ("group + rfm", &rfm_only),
        ("group + rfm + lifecycle", &t_total),
    ] {
        println!(
            "  {name:<24} wall {:>7.3} ms (median {:>7.3}), cpu {:>7.3} ms (median {:>7.3})",
            best(&t.wall) * 1e3,
            median(&t.wall) * 1e3,
            best(&t.cpu) * 1e3,
            median(&t.cpu) * 1e3
        );
    }
    Ok(())
}

/// Per-member kernel inputs from raw order rows, members in order of their first order.
///
/// RFM: last purchase day (all orders up to `as_of`), orders and money in the window. Lifecycle: first and
/// last purchase days, registration at the first purchase, last activity = last purchase.
fn group(orders: &[Order], as_of: NaiveDate, params: &RfmParams) -> (Vec<RfmInput>, Vec<LifecycleInput>) {
    let start = as_of.checked_sub_days(Days::new(u64::from(params.window_days.max(1)) - 1)).unwrap_or(NaiveDate::MIN);
    let mut index: HashMap<i64, usize> = HashMap::new();
    let mut rfm_in: Vec<RfmInput> = Vec::new();
    let mut first: Vec<NaiveDate> = Vec::new();
    for o in orders.iter().filter(|o| o.day <= as_of) {
        let i = match index.entry(o.customer) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                e.insert(rfm_in.len());
                rfm_in.push(RfmInput { member_id: o.customer, last_purchase: None, orders: 0, monetary_fen: 0 });
                first.push(o.day);
                rfm_in.len() - 1
            }
        };
        let m = &mut rfm_in[i];
        m.last_purchase = Some(m.last_purchase.map_or(o.day, |d| d.max(o.day)));
        first[i] = first[i].min(o.day);
        if o.day >= start {
            m.orders += 1;
            m.monetary_fen += o.amount_fen;
        }
    }
    let life_in = rfm_in
        .iter()
        .zip(&first)
        .map(|(m, &f)| LifecycleInput {
            member_id: m.member_id,
            registered: f,
            first_purchase: Some(f),
            last_purchase: m.last_purchase,
            last_activity: m.last_purchase,
        })
        .collect();
    (rfm_in, life_in)
}

/// `member_id,recency_days,orders,monetary_fen,r,f,m,segment,stage`; unscored members have empty scores.
fn write_members(path: &Path, report: &RfmReport, stages: &[LifecycleResult]) -> Res<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(["member_id", "recency_days", "orders", "monetary_fen", "r", "f", "m", "segment", "stage"])?;
    for (m, s) in report.members.iter().zip(stages) {
        let opt = |v: Option<u8>| v.map(|x| x.to_string()).unwrap_or_default();
        w.write_record([
            m.member_id.to_string(),
            m.recency_days.map(|d| d.to_string()).unwrap_or_default(),
            m.orders.to_string(),
            m.monetary_fen.to_string(),
            opt(m.scores.map(|x| x.r)),
            opt(m.scores.map(|x| x.f)),
            opt(m.scores.map(|x| x.m)),
            m.segment.map(|x| x.code().to_string()).unwrap_or_default(),
            s.stage.map(|x| x.code().to_string()).unwrap_or_default(),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// Orders from the gzipped CSV: one per kept invoice, in order of first appearance.
fn load(path: &Path) -> Res<Vec<Order>> {
    let mut rdr = csv::Reader::from_reader(GzDecoder::new(std::fs::File::open(path)?));
    let h = rdr.headers()?.clone();
    let col = |name: &str| h.iter().position(|c| c == name).ok_or_else(|| format!("no column {name}"));
    let (c_inv, c_qty, c_date, c_price, c_cust) =
        (col("InvoiceNo")?, col("Quantity")?, col("InvoiceDate")?, col("UnitPrice")?, col("CustomerID")?);
    let mut by_invoice: HashMap<String, usize> = HashMap::new();
    let mut orders: Vec<Order> = Vec::new();
    for rec in rdr.records() {
        let rec = rec?;
        let cust = rec[c_cust].trim();
        let inv = &rec[c_inv];
        if cust.is_empty() || inv.starts_with('C') {
            continue;
        }
        let customer = cust.parse::<f64>()? as i64;
        let day = NaiveDate::parse_from_str(rec[c_date].get(..10).ok_or("short date")?, "%Y-%m-%d")?;
        let qty: f64 = rec[c_qty].parse()?;
        let price: f64 = rec[c_price].parse()?;
        let amount_fen = (qty * price * 100.0).round() as i64;
        match by_invoice.get(inv) {
            Some(&i) => {
                let o = &mut orders[i];
                if o.customer != customer {
                    return Err(format!("invoice {inv} names customers {} and {customer}", o.customer).into());
                }
                o.day = o.day.min(day);
                o.amount_fen += amount_fen;
            }
            None => {
                by_invoice.insert(inv.to_string(), orders.len());
                orders.push(Order { customer, invoice: inv.to_string(), day, amount_fen });
            }
        }
    }
    Ok(orders)
}
