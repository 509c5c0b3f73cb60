//! Market-basket mining on UCI Online Retail: baskets are invoices (cancellations "C…" and lines with
//! quantity ≤ 0 left out), items are StockCodes. Prints the best-of-N time of `basket::mine` (FP-growth
//! plus rules; CSV parsing excluded) for each minimum support, and writes the baskets it used and its rules
//! so that `benches/basket.sh` can run mlxtend on the same baskets and compare rule by rule.
//!
//! Usage: cargo bench -p huiyuan-analytics --bench basket -- [--data FILE.csv.gz] [--out DIR]
//!        [--min-support 0.02,0.01] [--min-confidence 0.3] [--min-lift 1.0] [--max-len N|none] [--runs 5]

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flate2::read::GzDecoder;
use huiyuan_analytics::basket::{BasketParams, ItemDictionary, mine};

struct Args {
    data: PathBuf,
    out: PathBuf,
    /// As given (the label of the output files) and parsed.
    min_supports: Vec<(String, f64)>,
    min_confidence: f64,
    min_lift: f64,
    max_len: Option<usize>,
    runs: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        data: PathBuf::from("../../../shared/data/online_retail/online_retail.csv.gz"),
        out: PathBuf::from("../../target/basket-bench"),
        min_supports: vec![("0.02".into(), 0.02), ("0.01".into(), 0.01)],
        min_confidence: 0.3,
        min_lift: 1.0,
        max_len: None,
        runs: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            continue; // added by `cargo bench`
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = value.into(),
            "--out" => a.out = value.into(),
            "--min-support" => {
                a.min_supports = value.split(',').map(|s| (s.to_string(), s.parse().expect("min-support"))).collect()
            }
            "--min-confidence" => a.min_confidence = value.parse().expect("min-confidence"),
            "--min-lift" => a.min_lift = value.parse().expect("min-lift"),
            "--max-len" => a.max_len = if value == "none" { None } else { Some(value.parse().expect("max-len")) },
            "--runs" => a.runs = value.parse().expect("runs"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// Invoices in order of first appearance, each its StockCodes in line order.
fn read_baskets(path: &PathBuf) -> Vec<Vec<String>> {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = csv::Reader::from_reader(GzDecoder::new(file));
    let headers = reader.headers().expect("header").clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
    let (inv, code, qty) = (col("InvoiceNo"), col("StockCode"), col("Quantity"));
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut baskets: Vec<Vec<String>> = Vec::new();
    for rec in reader.records() {
        let rec = rec.expect("csv record");
        let invoice = &rec[inv];
        let quantity: f64 = rec[qty].trim().parse().expect("quantity");
        if invoice.starts_with('C') || quantity <= 0.0 {
            continue;
        }
        let i = *index.entry(invoice.to_string()).or_insert_with(|| {
            baskets.push(Vec::new());
            baskets.len() - 1
        });
        baskets[i].push(rec[code].to_string());
    }
    baskets
}

fn fmt(x: f64) -> String {
    if x.is_infinite() { "inf".into() } else { format!("{x:?}") }
}

fn main() {
    let args = parse_args();
    std::fs::create_dir_all(&args.out).expect("create out dir");
    let t = Instant::now();
    let raw = read_baskets(&args.data);
    let (dict, tx) = ItemDictionary::from_baskets(&raw).expect("dictionary");
    let entries: usize = tx.iter().map(Vec::len).sum();
    println!(
        "rust: {} baskets, {} distinct StockCodes, {} lines; parsed in {:.2} s",
        tx.len(),
        dict.len(),
        entries,
        t.elapsed().as_secs_f64()
    );
    let mut w = BufWriter::new(File::create(args.out.join("baskets.tsv")).expect("baskets file"));
    for b in &raw {
        writeln!(w, "{}", b.join("\t")).expect("write baskets");
    }
    w.flush().expect("flush baskets");

    for (label, min_support) in &args.min_supports {
        let min_support = *min_support;
        let params = BasketParams {
            min_support,
            min_confidence: args.min_confidence,
            min_lift: args.min_lift,
            max_len: args.max_len,
            ..BasketParams::default()
        };
        let mut best = Duration::MAX;
        let mut result = None;
        for _ in 0..args.runs.max(1) {
            let t = Instant::now();
            let r = mine(&tx, &params).expect("mine");
            best = best.min(t.elapsed());
            result = Some(r);
        }
        let Some(r) = result else { continue };
        let longest = r.itemsets.iter().map(|s| s.items.len()).max().unwrap_or(0);
        println!(
            "rust min_support={label}: {} itemsets (longest {longest}), {} rules; mine+rules best of {} = {:.3} ms",
            r.itemsets.len(),
            r.rules.len(),
            args.runs.max(1),
            best.as_secs_f64() * 1e3
        );
        let path = args.out.join(format!("rules_rust_{label}.csv"));
        let mut w = BufWriter::new(File::create(&path).expect("rules file"));
        writeln!(
            w,
            "antecedents,consequents,antecedent support,consequent support,support,confidence,lift,leverage,conviction"
        )
        .expect("write");
        let side = |ids: &[u32]| {
            let mut keys = dict.keys(ids).expect("known ids");
            keys.sort_unstable();
            keys.join("|")
        };
        for rule in &r.rules {
            writeln!(
                w,
                "\"{}\",\"{}\",{},{},{},{},{},{},{}",
                side(&rule.antecedent),
                side(&rule.consequent),
                fmt(rule.antecedent_support),
                fmt(rule.consequent_support),
                fmt(rule.support),
                fmt(rule.confidence),
                fmt(rule.lift),
                fmt(rule.leverage),
                fmt(rule.conviction.unwrap_or(f64::INFINITY))
            )
            .expect("write");
        }
        w.flush().expect("flush rules");
        println!("TIME rust {label} {:.6}", best.as_secs_f64());
        if let Some(top) = r.rules.first() {
            println!("  strongest: {}", dict.describe(top));
        }
    }
}
