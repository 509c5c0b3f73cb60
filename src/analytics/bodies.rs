//! Members' profile bodies as the stages file them, spilled to temporary files.
//!
//! A body is every model's explained result for one member, about 3 KB of JSON; a million members' bodies
//! are gigabytes, more than the rest of a run put together, and each stage adds its section to every member
//! before the next stage starts. So sections are not kept in memory: each section (a top-level key, or one
//! funnel) is a stream of its own, appended in member order to an anonymous temporary file (in `TMPDIR`,
//! removed by the OS when the file is closed), and memory holds only which members each stream has and how
//! long their sections are. When the run is done, [`Bodies::into_rows`] reads all the streams back side by
//! side, each sequentially, and joins each member's sections into its body a chunk of members at a time, as
//! the store writes them.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use crate::store::{MemberAnalyticsRow, MemberAnalyticsWrite, MemberRows, StoreError};

use super::AnalyticsError;

/// Where a stream's sections go in the body.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    /// `"<key>": section`.
    Top(&'static str),
    /// `"funnels": {"<name>": section, …}`.
    Funnel(String),
}

/// One section's stream: the sections of the members that have one, in member order.
#[derive(Debug)]
struct Stream {
    key: Key,
    file: BufWriter<File>,
    /// (member position, section length in bytes), by member position.
    entries: Vec<(u32, u32)>,
}

/// The bodies being written; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct Bodies {
    /// In order of first use, which is the order of the sections in every body.
    streams: Vec<Stream>,
}

impl Bodies {
    /// File member `i`'s section under `key`. Within a section, members must come in increasing position
    /// (every stage files its members in order), which is what lets the streams be read back sequentially.
    pub(super) fn put(&mut self, i: usize, key: &'static str, section: &str) -> Result<(), AnalyticsError> {
        self.append(Key::Top(key), i, section)
    }

    /// File member `i`'s state in funnel `name`.
    pub(super) fn put_funnel(&mut self, i: usize, name: &str, state: &str) -> Result<(), AnalyticsError> {
        self.append(Key::Funnel(name.to_string()), i, state)
    }

    fn append(&mut self, key: Key, i: usize, section: &str) -> Result<(), AnalyticsError> {
        let stream = match self.streams.iter().position(|s| s.key == key) {
            Some(k) => &mut self.streams[k],
            None => {
                let file = BufWriter::with_capacity(1 << 20, tempfile::tempfile()?);
                self.streams.push(Stream { key, file, entries: Vec::new() });
                let last = self.streams.len() - 1;
                &mut self.streams[last]
            }
        };
        let position = u32::try_from(i).map_err(|_| AnalyticsError::Spill(too_large("member position")))?;
        let len = u32::try_from(section.len()).map_err(|_| AnalyticsError::Spill(too_large("section")))?;
        if stream.entries.last().is_some_and(|&(last, _)| last >= position) {
            return Err(AnalyticsError::model(
                "bodies",
                format!("section {:?} filed for member position {i} out of order", stream.key),
            ));
        }
        stream.file.write_all(section.as_bytes())?;
        stream.entries.push((position, len));
        Ok(())
    }

    /// Read the bodies back, joined per member, for the store to write: `rows[i]` has every column of
    /// member position `i` but the body, which is filled in as the rows are handed over.
    pub(super) fn into_rows(self, rows: Vec<MemberAnalyticsRow<()>>) -> Result<SpilledRows, AnalyticsError> {
        let mut readers = Vec::with_capacity(self.streams.len());
        for s in self.streams {
            let mut file = s.file.into_inner().map_err(|e| AnalyticsError::Spill(e.into_error()))?;
            file.seek(SeekFrom::Start(0))?;
            readers.push(Reader {
                key: s.key,
                file: BufReader::with_capacity(1 << 20, file),
                entries: s.entries,
                next: 0,
            });
        }
        Ok(SpilledRows { readers, rows: rows.into_iter(), position: 0, buf: Vec::new() })
    }
}

fn too_large(what: &str) -> std::io::Error {
    std::io::Error::other(format!("{what} too large for the spill index"))
}

#[derive(Debug)]
struct Reader {
    key: Key,
    file: BufReader<File>,
    entries: Vec<(u32, u32)>,
    next: usize,
}

impl Reader {
    /// Whether this stream has a section for member `position` (the members it has are read in order).
    fn has(&self, position: usize) -> bool {
        self.entries.get(self.next).is_some_and(|&(p, _)| p as usize == position)
    }

    /// Append `"<key>":<section>` of the member `has` just answered for to `out`.
    fn take(&mut self, position: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
        let Some(&(p, len)) = self.entries.get(self.next) else { return Ok(()) };
        debug_assert_eq!(p as usize, position);
        self.next += 1;
        let key = match &self.key {
            Key::Top(key) => key,
            Key::Funnel(name) => name.as_str(),
        };
        serde_json::to_writer(&mut *out, key)?;
        out.push(b':');
        let start = out.len();
        out.resize(start + len as usize, 0);
        self.file.read_exact(&mut out[start..])
    }
}

/// A finished run's member rows, their bodies read back from the spill files as the store asks for them.
#[derive(Debug)]
pub struct SpilledRows {
    readers: Vec<Reader>,
    rows: std::vec::IntoIter<MemberAnalyticsRow<()>>,
    position: usize,
    buf: Vec<u8>,
}

impl SpilledRows {
    /// The next member's body: `{"<key>": …, …, "funnels": {"<name>": …, …}}`.
    fn body(&mut self) -> Result<Box<serde_json::value::RawValue>, StoreError> {
        let Self { readers, position, buf, .. } = self;
        let position = *position;
        buf.clear();
        buf.push(b'{');
        let mut first = true;
        for r in readers.iter_mut().filter(|r| matches!(r.key, Key::Top(_)) && r.has(position)) {
            if !std::mem::take(&mut first) {
                buf.push(b',');
            }
            r.take(position, buf)?;
        }
        let mut open = false;
        for r in readers.iter_mut().filter(|r| matches!(r.key, Key::Funnel(_)) && r.has(position)) {
            if !open {
                if !std::mem::take(&mut first) {
                    buf.push(b',');
                }
                buf.extend_from_slice(b"\"funnels\":{");
                open = true;
            } else {
                buf.push(b',');
            }
            r.take(position, buf)?;
        }
        if open {
            buf.push(b'}');
        }
        buf.push(b'}');
        let text = String::from_utf8(std::mem::take(buf)).map_err(|e| StoreError::Spill(std::io::Error::other(e)))?;
        serde_json::value::RawValue::from_string(text).map_err(|e| StoreError::Spill(e.into()))
    }
}

impl MemberRows for SpilledRows {
    fn next_chunk(&mut self, max: usize) -> Result<Vec<MemberAnalyticsWrite>, StoreError> {
        let mut chunk = Vec::with_capacity(max.min(self.rows.len()));
        while chunk.len() < max {
            let Some(row) = self.rows.next() else { break };
            chunk.push(row.with_body(self.body()?));
            self.position += 1;
        }
        Ok(chunk)
    }

    fn len(&self) -> usize {
        self.rows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(n: usize) -> Vec<MemberAnalyticsRow<()>> {
        (0..n)
            .map(|i| MemberAnalyticsRow {
                member_id: 100 + i as i64,
                rfm_segment: None,
                stage: "potential".into(),
                clv_fen: None,
                prob_alive: None,
                churn_risk: None,
                cluster: None,
                next_purchase: None,
                body: (),
            })
            .collect()
    }

    #[test]
    fn bodies_join_each_members_sections_and_skip_missing_ones() {
        let mut b = Bodies::default();
        b.put(0, "rfm", r#"{"r":1}"#).unwrap();
        b.put(2, "rfm", r#"{"r":3}"#).unwrap();
        b.put(1, "clv", "[1,2]").unwrap();
        b.put(2, "clv", "null").unwrap();
        b.put_funnel(0, "buy", r#"{"reached":2}"#).unwrap();
        b.put_funnel(2, "buy", r#"{"reached":1}"#).unwrap();
        b.put_funnel(2, "sign \"up\"", "true").unwrap();
        let mut rows = b.into_rows(columns(4)).unwrap();
        assert_eq!(rows.len(), 4);
        let first = rows.next_chunk(3).unwrap();
        let rest = rows.next_chunk(3).unwrap();
        assert!(rows.next_chunk(3).unwrap().is_empty());
        let bodies: Vec<(i64, serde_json::Value)> =
            first.iter().chain(&rest).map(|r| (r.member_id, serde_json::from_str(r.body.get()).unwrap())).collect();
        assert_eq!(
            bodies,
            vec![
                (100, serde_json::json!({"rfm": {"r": 1}, "funnels": {"buy": {"reached": 2}}})),
                (101, serde_json::json!({"clv": [1, 2]})),
                (
                    102,
                    serde_json::json!({"rfm": {"r": 3}, "clv": null, "funnels": {"buy": {"reached": 1}, "sign \"up\"": true}})
                ),
                (103, serde_json::json!({})),
            ]
        );
        // Keys keep the order the stages filed them in.
        assert!(first[0].body.get().starts_with(r#"{"rfm":"#));
    }

    #[test]
    fn a_section_filed_out_of_member_order_is_an_error() {
        let mut b = Bodies::default();
        b.put(3, "rfm", "1").unwrap();
        assert!(b.put(3, "rfm", "2").is_err());
        assert!(b.put(1, "rfm", "2").is_err());
        // Other sections have their own order.
        b.put(1, "clv", "2").unwrap();
    }
}
