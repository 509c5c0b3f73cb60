//! Members' analysis bodies as SQLite keeps them: one zstd frame per body, compressed with a dictionary
//! trained on the run's own bodies.
//!
//! A body is about 3 KB of JSON, and a million of them are about 2.9 GB, which every run writes twice (into
//! the write-ahead log, then into the database file) and the next run reads back. One body alone
//! compresses poorly (2.3× at zstd level 1 on the demo shop's bodies): what it repeats is mostly in
//! *other* members' bodies (the keys, the wording of the reasons, the shop's category and brand names). A
//! 32 KB dictionary trained on the run's first bodies carries that, and the same bodies compress 6.6×
//! (zstd CLI, `-b1 -D`). PostgreSQL compresses large values itself (TOAST), so this form is SQLite's alone.
//!
//! Stored form: `member_analytics.body` is a BLOB holding one zstd frame, and the run's dictionary, when it
//! had enough bodies to train one, is `analytics_runs.body_dict`. Bodies stored before this form are JSON
//! text and are read as they are: a zstd frame starts with its magic number, a JSON object with `{`.

use rayon::prelude::*;
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use super::{StoreError, StoreResult};

/// zstd's fastest regular level: with the dictionary, level 3 stored the demo bodies 6% smaller but
/// compressed them 17% slower (298 against 358 MB/s), and compression is on the run's critical path.
const LEVEL: i32 = 1;
/// Dictionary size: 16 KB compressed the demo bodies 6.3×, 32 KB 6.6×, 110 KB (zstd's default) 6.6×.
const DICT_BYTES: usize = 32 * 1024;
/// Fewer bodies than this train no dictionary (zstd's trainer wants about a hundred times the dictionary's
/// size in samples); they are compressed without one.
const MIN_TRAINING_BODIES: usize = 1_000;
/// The largest body a stored frame may expand to: a corrupt frame must not allocate without bound.
const MAX_BODY_BYTES: usize = 64 << 20;
/// The first bytes of every zstd frame: a stored value that starts otherwise was stored before compression.
pub(super) const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

fn codec_error(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("member body {what}: {e}"))
}

/// Train a run's dictionary on `bodies` (its first ones); `None` when they are too few, or zstd finds
/// nothing to learn, and the run's bodies are then compressed without one.
pub(super) fn train(bodies: &[&str]) -> Option<Vec<u8>> {
    if bodies.len() < MIN_TRAINING_BODIES {
        return None;
    }
    let sizes: Vec<usize> = bodies.iter().map(|b| b.len()).collect();
    let data: Vec<u8> = bodies.iter().flat_map(|b| b.bytes()).collect();
    match zstd::dict::from_continuous(&data, &sizes, DICT_BYTES) {
        Ok(dict) => Some(dict),
        Err(e) => {
            tracing::debug!(error = %e, bodies = bodies.len(), "no body dictionary: bodies compressed without one");
            None
        }
    }
}

/// Compresses one run's bodies.
pub(super) struct Encoder {
    dict: Option<EncoderDictionary<'static>>,
}

impl Encoder {
    pub(super) fn new(dict: Option<&[u8]>) -> StoreResult<Self> {
        let dict = dict
            .map(|d| EncoderDictionary::try_copy(d, LEVEL))
            .transpose()
            .map_err(|e| codec_error("dictionary", e))?;
        Ok(Self { dict })
    }

    fn compressor(&self) -> std::io::Result<Compressor<'_>> {
        match &self.dict {
            Some(dict) => Compressor::with_prepared_dictionary(dict),
            None => Compressor::new(LEVEL),
        }
    }

    /// Compress `bodies`, in order, on the rayon pool: a million bodies are seconds of one core's time.
    pub(super) fn compress_all(&self, bodies: &[&str]) -> StoreResult<Vec<Vec<u8>>> {
        let chunks: Vec<Vec<Vec<u8>>> = bodies
            .par_chunks(512)
            .map(|chunk| {
                let mut c = self.compressor()?;
                chunk.iter().map(|b| c.compress(b.as_bytes())).collect::<std::io::Result<Vec<_>>>()
            })
            .collect::<std::io::Result<_>>()
            .map_err(|e| codec_error("compression", e))?;
        Ok(chunks.into_iter().flatten().collect())
    }
}

/// Reads one run's stored bodies back to JSON text.
pub(super) struct Decoder {
    dict: Option<DecoderDictionary<'static>>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("dict", &self.dict.is_some()).finish()
    }
}

impl Decoder {
    pub(super) fn new(dict: Option<&[u8]>) -> Self {
        Self { dict: dict.map(DecoderDictionary::copy) }
    }

    /// A decompression context to pass to [`Decoder::text`]; make one per thread and reuse it.
    pub(super) fn context(&self) -> StoreResult<Decompressor<'_>> {
        match &self.dict {
            Some(dict) => Decompressor::with_prepared_dictionary(dict),
            None => Decompressor::new(),
        }
        .map_err(|e| codec_error("decompression context", e))
    }

    /// The JSON text of a stored body: a zstd frame is decompressed, text stored before compression is
    /// returned as it is.
    fn text(&self, context: &mut Decompressor<'_>, stored: &[u8]) -> StoreResult<String> {
        let bytes = if stored.starts_with(&ZSTD_MAGIC) {
            context.decompress(stored, MAX_BODY_BYTES).map_err(|e| codec_error("decompression", e))?
        } else {
            stored.to_vec()
        };
        String::from_utf8(bytes).map_err(|e| codec_error("text", e))
    }

    /// A stored body parsed as `T` (the whole body, or the parts of it `T` names).
    pub(super) fn json<T: serde::de::DeserializeOwned>(
        &self,
        context: &mut Decompressor<'_>,
        stored: &[u8],
    ) -> StoreResult<T> {
        serde_json::from_str(&self.text(context, stored)?).map_err(|e| codec_error("JSON", e))
    }

    /// The JSON text of one stored body (the context is made for it).
    #[cfg(test)]
    fn one(&self, stored: &[u8]) -> StoreResult<String> {
        self.text(&mut self.context()?, stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies shaped like the analysis' own: the same keys and wording, different members and numbers.
    fn bodies(n: usize) -> Vec<String> {
        let categories = ["食品/零食", "母婴/纸尿裤", "家居/床品", "美妆/护肤", "食品/茶饮"];
        let segments = ["important_value", "general_retain"];
        let statuses = ["due", "lapsed", "early"];
        (0..n)
            .map(|i| {
                let (category, other) = (categories[i % 5], categories[(i + 2) % 5]);
                serde_json::json!({
                    "rfm": {"member_id": i, "recency_days": i % 365, "orders": i % 17, "monetary_fen": i * 7919 % 500_000,
                            "segment": segments[i % 2],
                            "reason": format!("R {} > mean 2.96, F {} > mean 2.74", i % 5 + 1, i % 3 + 1)},
                    "cycle": {"typical_interval_days": (i % 40) as f64 + 0.5, "status": statuses[i % 3],
                              "reason": format!("typical interval {} days (median of {} intervals)", i % 40, i % 9)},
                    "preferences": {"categories": [{"key": category, "share": (i % 100) as f64 / 100.0},
                                                   {"key": other, "share": (i % 7) as f64 / 7.0}],
                                    "reason": format!("mostly {category} ({}%)", i % 100)},
                })
                .to_string()
            })
            .collect()
    }

    #[test]
    fn bodies_come_back_exactly_with_or_without_a_dictionary() {
        let texts = bodies(3_000);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let dict = train(&refs).expect("3,000 bodies train a dictionary");
        assert!(dict.len() <= DICT_BYTES);
        for dict in [Some(dict.as_slice()), None] {
            let stored = Encoder::new(dict).unwrap().compress_all(&refs).unwrap();
            assert_eq!(stored.len(), refs.len());
            let decoder = Decoder::new(dict);
            let mut context = decoder.context().unwrap();
            for (text, z) in refs.iter().zip(&stored) {
                assert!(z.starts_with(&ZSTD_MAGIC));
                assert_eq!(decoder.text(&mut context, z).unwrap(), *text);
            }
            let (plain, packed) =
                (refs.iter().map(|t| t.len()).sum::<usize>(), stored.iter().map(Vec::len).sum::<usize>());
            // What the dictionary is for: these bodies shrink far more with it than without.
            let least = if dict.is_some() { 4 } else { 1 };
            assert!(plain > least * packed, "{plain} bytes stored as {packed} (dictionary: {})", dict.is_some());
        }
    }

    #[test]
    fn too_few_bodies_train_no_dictionary() {
        let texts = bodies(MIN_TRAINING_BODIES - 1);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        assert!(train(&refs).is_none());
    }

    #[test]
    fn text_stored_before_compression_is_read_as_it_is_and_a_bad_frame_is_an_error() {
        let decoder = Decoder::new(None);
        assert_eq!(decoder.one(br#"{"rfm":null}"#).unwrap(), r#"{"rfm":null}"#);
        let mut frame = Encoder::new(None).unwrap().compress_all(&[r#"{"rfm":null}"#]).unwrap().remove(0);
        let last = frame.len() - 1;
        frame[last] ^= 0xff;
        frame.truncate(last - 2);
        assert!(matches!(decoder.one(&frame), Err(StoreError::Corrupt(_))));
        // A frame compressed with a dictionary cannot be read without it.
        let texts = bodies(2_000);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let dict = train(&refs).unwrap();
        let with_dict = Encoder::new(Some(&dict)).unwrap().compress_all(&refs[..1]).unwrap().remove(0);
        assert!(decoder.one(&with_dict).is_err());
        assert_eq!(Decoder::new(Some(&dict)).one(&with_dict).unwrap(), refs[0]);
    }
}
