//! Rule evaluations as SQLite keeps them: one zstd frame per evaluation.
//!
//! Every earning operation stores its evaluation (why each rule applied or not), about 2.5 KB of JSON for
//! an order under the default rules: the largest row an order writes, and most of a shop's database over
//! time. Its keys and wordings repeat within the evaluation, so zstd's fastest level alone stores it about
//! 3.8× smaller (2,602 → 687 bytes on average over 2,000 benchmark orders). PostgreSQL keeps the JSONB and
//! compresses large values itself (TOAST), so this form is SQLite's alone, like the analysis bodies'
//! (`body_codec`).
//!
//! Evaluations stored before this form are JSON text and are read as they are: a zstd frame starts with its
//! magic number, a JSON object with `{`.

use std::cell::RefCell;

use serde_json::value::RawValue;
use zstd::bulk::{Compressor, Decompressor};

use super::body_codec::ZSTD_MAGIC;
use super::{StoreError, StoreResult};

/// zstd's fastest regular level: compression is on the order writer's path.
const LEVEL: i32 = 1;
/// The largest evaluation a stored frame may expand to: a corrupt frame must not allocate without bound.
const MAX_EVALUATION_BYTES: usize = 16 << 20;

thread_local! {
    /// One compression context per thread, reused: making one per evaluation cost more than compressing.
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
}

fn codec_error(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("rule evaluation {what}: {e}"))
}

/// The stored form of an evaluation.
pub(super) fn compress(evaluation: &RawValue) -> StoreResult<Vec<u8>> {
    COMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        let compressor = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(Compressor::new(LEVEL).map_err(|e| codec_error("compression context", e))?),
        };
        compressor.compress(evaluation.get().as_bytes()).map_err(|e| codec_error("compression", e))
    })
}

/// An evaluation as it was stored: a zstd frame is decompressed, JSON text stored before compression is
/// taken as it is.
pub(super) fn decompress(stored: Vec<u8>) -> StoreResult<Box<RawValue>> {
    let text = if stored.starts_with(&ZSTD_MAGIC) {
        let size = Decompressor::upper_bound(&stored)
            .filter(|n| *n <= MAX_EVALUATION_BYTES)
            .ok_or_else(|| codec_error("frame", "no size, or too large"))?;
        zstd::bulk::decompress(&stored, size).map_err(|e| codec_error("decompression", e))?
    } else {
        stored
    };
    let text = String::from_utf8(text).map_err(|e| codec_error("text", e))?;
    RawValue::from_string(text).map_err(|e| codec_error("JSON", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).expect("test JSON")
    }

    #[test]
    fn an_evaluation_reads_back_exactly_and_is_stored_smaller() {
        let explanation =
            r#"{"rule_id":"member_day","target":{"on":"order"},"applied":false,"reason":"member day is Wednesday"}"#;
        let text = format!(r#"{{"rule_version":3,"effects":[],"explanations":[{}]}}"#, vec![explanation; 20].join(","));
        let stored = compress(&raw(&text)).expect("compress");
        assert!(stored.starts_with(&ZSTD_MAGIC));
        assert!(stored.len() * 4 < text.len(), "{} bytes stored for {}", stored.len(), text.len());
        assert_eq!(decompress(stored).expect("decompress").get(), text);
    }

    #[test]
    fn text_stored_before_compression_reads_as_it_is() {
        let text = r#"{"rule_version":1,"effects":[],"explanations":[]}"#;
        assert_eq!(decompress(text.as_bytes().to_vec()).expect("legacy text").get(), text);
    }

    #[test]
    fn a_corrupt_frame_is_an_error_not_a_panic() {
        let mut stored = compress(&raw(r#"{"a":[1,2,3]}"#)).expect("compress");
        let n = stored.len();
        stored.truncate(n - 3);
        assert!(decompress(stored).is_err());
        let mut header_only = ZSTD_MAGIC.to_vec();
        header_only.extend([0xff; 3]);
        assert!(decompress(header_only).is_err());
    }
}
