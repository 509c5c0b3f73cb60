//! Bulk import of members, orders and events from CSV or JSON Lines files (gzip read directly).
//!
//! Every write goes through [`App`] in batches (one transaction per batch), so an import behaves exactly
//! like the same records sent through the API. Rows that cannot be imported go to a reject CSV with their
//! line number and reason; rows a shop would not import at all (accounting entries, double records) are
//! counted as skipped and explained in the summary's notes. Importing the same file twice changes nothing:
//! every record is built deterministically from the file, so the store recognises it as a duplicate.

mod generic;
mod online_retail;
mod plain;
mod reader;
mod rees46;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::app::{App, AppError};
use crate::error::Invalid;
use crate::security::Principal;

/// How many records go into one `App` call (one transaction).
pub(crate) const BATCH: usize = 1000;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Members,
    Orders,
    Events,
}

/// How a file is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    /// The format a file name implies (`.csv`, `.jsonl`/`.ndjson`), a trailing `.gz` ignored.
    pub fn infer(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".csv") {
            Some(Format::Csv)
        } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
            Some(Format::Jsonl)
        } else {
            None
        }
    }
}

/// What to import and how; built by the CLI from its arguments.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub entity: Entity,
    pub path: PathBuf,
    /// `None`: inferred from the file name (a trailing `.gz` is ignored).
    pub format: Option<Format>,
    /// A named mapping for a known foreign layout (see [`MAPPINGS`]); `None` for Huiyuan's own layouts.
    pub mapping: Option<String>,
    /// Where rejected rows go; `None`: `<FILE>.rejects.csv` in the working directory.
    pub reject_path: Option<PathBuf>,
    /// Show a progress bar (the CLI sets this only on a terminal).
    pub progress: bool,
}

/// The named mappings and the entity each one imports.
pub const MAPPINGS: [(&str, Entity); 3] =
    [("online-retail", Entity::Orders), ("generic", Entity::Orders), ("rees46", Entity::Events)];

/// What an import did. `read`, `rejected` and `skipped` count input rows (so they can be found in the
/// file); `imported` and `duplicates` count stored records (members, orders, refunds, events), because one
/// order may span many rows. The notes break these down.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportSummary {
    /// Data rows (or JSON lines) read, header excluded.
    pub read: u64,
    /// Records created or changed.
    pub imported: u64,
    /// Records already stored with the same content (members unchanged, orders, refunds and events seen).
    pub duplicates: u64,
    /// Rows written to the reject file.
    pub rejected: u64,
    /// Rows a shop would not import (accounting rows, double records); the notes say why.
    pub skipped: u64,
    /// Human-readable remarks: choices made, breakdowns, what was skipped and why.
    pub notes: Vec<String>,
    pub elapsed: Duration,
    /// The reject file, only when something was rejected.
    pub reject_file: Option<PathBuf>,
}

impl ImportSummary {
    /// Input rows per second over the whole import.
    pub fn rows_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.read as f64 / secs } else { 0.0 }
    }
}

/// Why an import stopped. Bad rows never stop an import (they are rejected); these are problems with the
/// file as a whole or with the database.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The cause is the `source`, printed by the caller's error chain.
    #[error("{path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}")]
    Csv { path: PathBuf, source: csv::Error },
    #[error("{path}: the header has no identity column (one of {kinds}); header: {header}")]
    NoIdentityColumn { path: PathBuf, kinds: String, header: String },
    #[error("{path}: the header has no `{column}` column (header: {header})")]
    MissingColumn { path: PathBuf, column: String, header: String },
    #[error("{path}: unknown column `{column}`; expected {expected}")]
    UnknownColumn { path: PathBuf, column: String, expected: String },
    #[error("unknown mapping `{0}`; valid mappings are {valid}", valid = mapping_names())]
    UnknownMapping(String),
    #[error("mapping `{mapping}` imports {expected:?}, not {given:?}")]
    WrongEntity { mapping: String, expected: Entity, given: Entity },
    #[error("{path}: cannot tell the format from the file name; give it explicitly (csv or jsonl)")]
    UnknownFormat { path: PathBuf },
    #[error("{entity:?} cannot be imported from {format:?}{hint}")]
    Unsupported { entity: Entity, format: Format, hint: &'static str },
    #[error(transparent)]
    App(#[from] AppError),
}

fn mapping_names() -> String {
    MAPPINGS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// Import one file. Returns what was done; rows that could not be imported are in the reject file.
pub async fn run(app: &App, opts: &ImportOptions) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    let mut ctx = Ctx::new(app, opts);
    match opts.mapping.as_deref() {
        Some(name) => {
            let &(_, expected) = MAPPINGS
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| ImportError::UnknownMapping(name.to_string()))?;
            if expected != opts.entity {
                return Err(ImportError::WrongEntity { mapping: name.to_string(), expected, given: opts.entity });
            }
            match name {
                "online-retail" => online_retail::import(&mut ctx).await?,
                "generic" => generic::import(&mut ctx).await?,
                _ => rees46::import(&mut ctx).await?,
            }
        }
        None => {
            let format = opts
                .format
                .or_else(|| Format::infer(&opts.path))
                .ok_or_else(|| ImportError::UnknownFormat { path: opts.path.clone() })?;
            match (opts.entity, format) {
                (Entity::Members, Format::Csv) => plain::members_csv(&mut ctx).await?,
                (Entity::Members, Format::Jsonl) => plain::members_jsonl(&mut ctx).await?,
                (Entity::Orders, Format::Csv) => generic::import(&mut ctx).await?,
                (Entity::Orders, Format::Jsonl) => plain::orders_jsonl(&mut ctx).await?,
                (Entity::Events, Format::Jsonl) => plain::events_jsonl(&mut ctx).await?,
                (Entity::Events, Format::Csv) => {
                    return Err(ImportError::Unsupported {
                        entity: Entity::Events,
                        format: Format::Csv,
                        hint: "; use JSON Lines or --mapping rees46",
                    });
                }
            }
        }
    }
    ctx.finish(started.elapsed())
}

/// What every importer shares: the app, the options, the reject file, the progress bar and the counts.
pub(crate) struct Ctx<'a> {
    pub app: &'a App,
    pub opts: &'a ImportOptions,
    pub who: Principal,
    pub rejects: reader::Rejects,
    pub progress: indicatif::ProgressBar,
    pub summary: ImportSummary,
}

impl<'a> Ctx<'a> {
    fn new(app: &'a App, opts: &'a ImportOptions) -> Self {
        let reject_path = opts.reject_path.clone().unwrap_or_else(|| default_reject_path(&opts.path));
        let progress = if opts.progress {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} {pos} rows, {per_sec} [{elapsed_precise}] {msg}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        Ctx {
            app,
            opts,
            who: Principal::cli(),
            rejects: reader::Rejects::new(reject_path),
            progress,
            summary: ImportSummary::default(),
        }
    }

    /// Count one input row read.
    pub fn row_read(&mut self) {
        self.summary.read += 1;
        self.progress.inc(1);
    }

    /// Reject one input row.
    pub fn reject(&mut self, line: u64, e: &Invalid, raw: &str) -> Result<(), ImportError> {
        self.summary.rejected += 1;
        self.rejects.write(line, e, raw)
    }

    pub fn note(&mut self, s: impl Into<String>) {
        self.summary.notes.push(s.into());
    }

    fn finish(mut self, elapsed: Duration) -> Result<ImportSummary, ImportError> {
        self.progress.finish_and_clear();
        self.summary.reject_file = self.rejects.close()?;
        self.summary.elapsed = elapsed;
        Ok(self.summary)
    }
}

/// `<FILE>.rejects.csv` in the working directory: the input's own folder may be read-only or shared.
fn default_reject_path(input: &Path) -> PathBuf {
    let mut name = input.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".rejects.csv");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_inferred_through_gz() {
        assert_eq!(Format::infer(Path::new("a/orders.csv.gz")), Some(Format::Csv));
        assert_eq!(Format::infer(Path::new("events.JSONL")), Some(Format::Jsonl));
        assert_eq!(Format::infer(Path::new("x.txt")), None);
        assert_eq!(default_reject_path(Path::new("/d/o.csv.gz")), PathBuf::from("o.csv.gz.rejects.csv"));
    }

    #[test]
    fn unknown_mapping_names_the_valid_ones() {
        let e = ImportError::UnknownMapping("x".into()).to_string();
        assert!(e.contains("online-retail, generic, rees46"), "{e}");
    }
}
