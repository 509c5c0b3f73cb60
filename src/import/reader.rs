//! Reading input (plain or gzip), finding columns, writing rejects, and the small parsers every mapping
//! shares (money, times). The parsers are pure and return [`Invalid`] naming the field, so a rejected row
//! says exactly what was wrong with it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use super::ImportError;
use crate::error::Invalid;

/// Open a file for reading, decompressing it when the name ends in `.gz` (concatenated gzip members
/// included, as `gzip` itself writes them).
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>, ImportError> {
    let file = File::open(path).map_err(|source| ImportError::Io { path: path.to_path_buf(), source })?;
    let gz = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let inner: Box<dyn Read + Send> =
        if gz { Box::new(flate2::read::MultiGzDecoder::new(file)) } else { Box::new(file) };
    Ok(Box::new(BufReader::with_capacity(256 * 1024, inner)))
}

/// A CSV reader over a file, with its header.
pub fn csv_reader(path: &Path) -> Result<(csv::Reader<Box<dyn BufRead + Send>>, Header), ImportError> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(open(path)?);
    let names = rdr.headers().map_err(|source| ImportError::Csv { path: path.to_path_buf(), source })?.clone();
    Ok((rdr, Header { path: path.to_path_buf(), names }))
}

/// Column positions by name.
pub struct Header {
    path: PathBuf,
    names: csv::StringRecord,
}

impl Header {
    /// The position of a column that must be present.
    pub fn required(&self, name: &str) -> Result<usize, ImportError> {
        self.optional(name).ok_or_else(|| ImportError::MissingColumn {
            path: self.path.clone(),
            column: name.to_string(),
            header: self.names.iter().collect::<Vec<_>>().join(","),
        })
    }

    /// The position of a column that may be absent. Names are compared trimmed and case-insensitively.
    pub fn optional(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.trim().eq_ignore_ascii_case(name))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    pub fn for_test(names: csv::StringRecord) -> Header {
        Header { path: PathBuf::from("test.csv"), names }
    }
}

/// A field of a record, trimmed; absent columns read as empty.
pub fn field(rec: &csv::StringRecord, at: Option<usize>) -> &str {
    at.and_then(|i| rec.get(i)).unwrap_or("").trim()
}

/// The record as one CSV line, for the reject file (and for spotting rows repeated verbatim).
pub fn raw(rec: &csv::StringRecord) -> String {
    let special = |b: &u8| matches!(b, b',' | b'"' | b'\n' | b'\r');
    // Most rows need no quoting: one pass over the bytes decides (this runs for every input row).
    if !rec.as_slice().as_bytes().iter().any(special) {
        return rec.iter().collect::<Vec<_>>().join(",");
    }
    let mut out = String::with_capacity(rec.as_slice().len() + rec.len() + 8);
    for (i, f) in rec.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if f.as_bytes().iter().any(special) {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(f);
        }
    }
    out
}

/// The 1-based line a record starts on (the header is line 1).
pub fn line_of(rec: &csv::StringRecord) -> u64 {
    rec.position().map(|p| p.line()).unwrap_or(0)
}

/// The reject file, created on the first rejected row: `line,code,field,reason,raw`.
pub struct Rejects {
    path: PathBuf,
    writer: Option<csv::Writer<File>>,
}

impl Rejects {
    pub fn new(path: PathBuf) -> Self {
        Rejects { path, writer: None }
    }

    pub fn write(&mut self, line: u64, e: &Invalid, raw: &str) -> Result<(), ImportError> {
        let path = &self.path;
        let csv_err = |source| ImportError::Csv { path: path.clone(), source };
        if self.writer.is_none() {
            let mut w = csv::Writer::from_path(path).map_err(csv_err)?;
            w.write_record(["line", "code", "field", "reason", "raw"]).map_err(csv_err)?;
            self.writer = Some(w);
        }
        if let Some(w) = self.writer.as_mut() {
            w.write_record([line.to_string().as_str(), e.code, &e.field, &e.message, raw]).map_err(csv_err)?;
        }
        Ok(())
    }

    /// Flush and say where the rejects went, if anywhere.
    pub fn close(&mut self) -> Result<Option<PathBuf>, ImportError> {
        match self.writer.take() {
            Some(mut w) => {
                w.flush().map_err(|source| ImportError::Io { path: self.path.clone(), source })?;
                Ok(Some(self.path.clone()))
            }
            None => Ok(None),
        }
    }
}

/// A decimal amount in major units (`"2.55"`, `"-1.5"`, `"1,234.50"` is refused) to minor units with two
/// decimals; more decimals are rounded half away from zero (`"0.001"` → 0). The flag says whether it was
/// rounded, so the caller can report it.
pub fn parse_money(s: &str, field: &str) -> Result<(i64, bool), Invalid> {
    let bad = || Invalid::new("invalid_number", field, format!("`{s}` is not an amount like 12.34"));
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    if int.len() > 13 {
        return Err(Invalid::new("out_of_range", field, format!("`{s}` is too large")));
    }
    let whole: i64 = if int.is_empty() { 0 } else { int.parse().map_err(|_| bad())? };
    let digit = |i: usize| frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
    let mut minor = whole * 100 + digit(0) * 10 + digit(1);
    let rest = &frac[frac.len().min(2)..];
    let rounded = rest.bytes().any(|b| b != b'0');
    if digit(2) >= 5 {
        minor += 1;
    }
    Ok((if neg { -minor } else { minor }, rounded))
}

/// An integer field (`quantity`, amounts already in minor units).
pub fn parse_int(s: &str, field: &str) -> Result<i64, Invalid> {
    s.trim().parse().map_err(|_| Invalid::new("invalid_number", field, format!("`{s}` is not a whole number")))
}

/// A UTC time given as RFC 3339 (`2024-05-01T08:00:00+08:00`) or `YYYY-MM-DD HH:MM:SS` (taken as UTC).
pub fn parse_utc(s: &str, field: &str) -> Result<DateTime<Utc>, Invalid> {
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    let naive = t.strip_suffix(" UTC").unwrap_or(t);
    NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S").map(|n| n.and_utc()).map_err(|_| {
        Invalid::new("invalid_time", field, format!("`{s}` is not a time like 2024-05-01 08:00:00 or RFC 3339"))
    })
}

/// A shop-local wall-clock time in `tz` to UTC. In the autumn overlap the earlier instant is taken; a time
/// in the spring gap (which no clock showed) is read as the instant an hour later.
pub fn local_to_utc(naive: NaiveDateTime, tz: chrono_tz::Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&naive).earliest() {
        Some(t) => t.with_timezone(&Utc),
        None => tz
            .from_local_datetime(&(naive + chrono::Duration::hours(1)))
            .earliest()
            .map_or_else(|| naive.and_utc(), |t| t.with_timezone(&Utc)),
    }
}

/// JSON Lines: each non-blank line with its 1-based line number. A line that is not UTF-8 is an error
/// for that line only.
pub fn jsonl_lines(path: &Path) -> Result<impl Iterator<Item = (u64, std::io::Result<String>)>, ImportError> {
    let r = open(path)?;
    Ok(r.lines()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l))
        .filter(|(_, l)| l.as_ref().map_or(true, |s| !s.trim().is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_rows_are_csv_again() {
        let rec = csv::StringRecord::from(vec!["a", "b,c", "say \"hi\"", ""]);
        assert_eq!(raw(&rec), "a,\"b,c\",\"say \"\"hi\"\"\",");
    }

    #[test]
    fn money_parses_to_minor_units() {
        assert_eq!(parse_money("2.55", "p").unwrap(), (255, false));
        assert_eq!(parse_money("2.5", "p").unwrap(), (250, false));
        assert_eq!(parse_money("3", "p").unwrap(), (300, false));
        assert_eq!(parse_money("-11062.06", "p").unwrap(), (-1_106_206, false));
        assert_eq!(parse_money("0.001", "p").unwrap(), (0, true));
        assert_eq!(parse_money("0.005", "p").unwrap(), (1, true));
        assert_eq!(parse_money(".5", "p").unwrap(), (50, false));
        for bad in ["", "-", "1,5", "abc", "1.2.3", "1e3", "."] {
            assert_eq!(parse_money(bad, "p").unwrap_err().code, "invalid_number", "{bad}");
        }
    }

    #[test]
    fn uk_local_time_follows_bst() {
        let tz = chrono_tz::Europe::London;
        let at =
            |s: &str| local_to_utc(NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap(), tz).to_rfc3339();
        assert_eq!(at("2010-12-01 08:26:00"), "2010-12-01T08:26:00+00:00");
        assert_eq!(at("2011-03-27 10:16:00"), "2011-03-27T09:16:00+00:00");
        assert_eq!(at("2011-10-30 10:18:00"), "2011-10-30T10:18:00+00:00");
        // The autumn overlap takes the first (BST) instant; the spring gap moves forward.
        assert_eq!(at("2011-10-30 01:30:00"), "2011-10-30T00:30:00+00:00");
        assert_eq!(at("2011-03-27 01:30:00"), "2011-03-27T01:30:00+00:00");
    }

    #[test]
    fn utc_times_take_two_forms() {
        assert_eq!(parse_utc("2024-05-01 08:00:00", "t").unwrap().to_rfc3339(), "2024-05-01T08:00:00+00:00");
        assert_eq!(parse_utc("2019-10-01 00:00:05 UTC", "t").unwrap().to_rfc3339(), "2019-10-01T00:00:05+00:00");
        assert_eq!(parse_utc("2024-05-01T08:00:00+08:00", "t").unwrap().to_rfc3339(), "2024-05-01T00:00:00+00:00");
        assert_eq!(parse_utc("yesterday", "t").unwrap_err().field, "t");
    }
}
