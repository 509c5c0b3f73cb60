//! Keyword tags: tags found in members' free text (reviews, service notes), e.g. "敏感肌" from
//! "我是敏感肌，用了不刺激".
//!
//! **Matching.** Chinese text has no spaces, so words cannot be split reliably without a segmentation
//! model; the honest approach is substring matching. Text and keywords are both normalised the same way —
//! Unicode NFKC (full-width letters, digits and punctuation become half-width: "ＳＥＮＳＩＴＩＶＥ，" →
//! "SENSITIVE,"), then lowercase, curly apostrophes to `'`, runs of whitespace to one space — and every
//! keyword of every tag is found in one pass with an Aho–Corasick automaton (the `aho-corasick` crate),
//! reporting overlapping matches so that one tag's keyword never hides another's. A keyword that begins
//! or ends with an ASCII letter or digit must sit on an ASCII word boundary there ("sensitive" does not
//! match "insensitive"); CJK keywords match anywhere.
//!
//! **Negation guard** (simple cases only). A mention is *negated* when, inside the same clause (clauses
//! end at , . ; : ! ? 。 、 … or a line break, and a contrast word — 但, 可是, 不过, 然而, but, however,
//! although, though — starts a new scope), a negation cue appears shortly before it: a CJK cue (不, 没, 无,
//! 非, 别, 未; these also cover 不是, 没有, 并非) within the [`KeywordParams::cjk_window_chars`] (4)
//! characters before the keyword, or an English cue (not, no, never, without, non, nor, hardly, or any
//! word ending in n't) among the [`KeywordParams::word_window`] (3) words before it. Common words that
//! contain a cue without negating (不错, 不少, 不仅, 不久, 不同, 没想到, 无论, 不管, 非常, …) are masked
//! first. So "不是敏感肌", "我不太敏感", "not sensitive", "isn't very sensitive" give no tag, while
//! "皮肤不好，敏感肌", "效果不错敏感肌也能用" and "not oily but sensitive" do.
//! Limits: no double negation ("不是不敏感" is read as negated), no negation after the keyword
//! ("敏感肌？没有"), no hypotheticals ("如果是敏感肌"), no Traditional/Simplified folding, and a cue used in
//! another sense inside the window and not in the masked list negates wrongly ("没想到" is masked, but
//! "没洗脸就敏感" is read as negated).
//!
//! **Evidence.** Each text with at least one un-negated mention of a tag is one [`TagObservation`] at the
//! text's time with the tag's strength (default 0.5), however often that text repeats the keyword; the
//! weight module combines texts with decay. [`KeywordHits`] sums mentions, negated mentions, texts and the
//! last hit time per member and tag.

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, MatchKind};
use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use super::weight::{TagError, TagObservation, TagSource};

/// Normalises text for keyword matching: NFKC (full-width → half-width), lowercase, curly apostrophes
/// to `'`, whitespace runs to one space, trimmed.
pub fn normalize_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.nfkc().flat_map(char::to_lowercase) {
        let c = if matches!(c, '\u{2019}' | '\u{2018}' | '\u{02bc}') { '\'' } else { c };
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
    }
    out
}

fn default_keyword_strength() -> f64 {
    0.5
}

/// A keyword tag as an operator defines it: the tag and the keywords or synonyms that signal it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeywordTagDef {
    /// The tag name, e.g. `敏感肌`.
    pub tag: String,
    /// The tag category (usually `interest` or `basic`); selects the half-life.
    pub category: String,
    /// Keywords and synonyms in any language, e.g. `["敏感肌", "皮肤敏感", "sensitive skin"]`.
    pub keywords: Vec<String>,
    /// Evidence strength in (0, 1] of one text that mentions the tag; default 0.5 (two texts ≈ 0.75).
    #[serde(default = "default_keyword_strength")]
    pub strength: f64,
}

/// Negation-guard settings. Defaults are listed in the module doc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeywordParams {
    /// Negation cues; ASCII cues match whole words, others match as substrings.
    pub negation_cues: Vec<String>,
    /// Words that contain a cue but do not negate; masked before looking for cues.
    pub non_negating: Vec<String>,
    /// Contrast words after which an earlier negation no longer applies.
    pub contrast_words: Vec<String>,
    /// How many characters before a keyword a CJK cue may appear in (default 4).
    pub cjk_window_chars: usize,
    /// How many words before a keyword an English cue may appear in (default 3).
    pub word_window: usize,
}

impl Default for KeywordParams {
    fn default() -> Self {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        Self {
            negation_cues: v(&[
                "不", "没", "无", "非", "别", "未", "not", "no", "never", "without", "non", "nor", "hardly",
            ]),
            non_negating: v(&[
                "不错",
                "不少",
                "不仅",
                "不但",
                "不断",
                "不久",
                "不同",
                "不得不",
                "没想到",
                "无论",
                "不管",
                "非常",
            ]),
            contrast_words: v(&["但", "可是", "不过", "然而", "but", "however", "although", "though"]),
            cjk_window_chars: 4,
            word_window: 3,
        }
    }
}

/// A piece of member free text with its time (a review, a service note).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberText {
    /// The member who wrote it or whom it is about.
    pub member_id: i64,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// The text.
    pub text: String,
}

/// One keyword mention found in a text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeywordMatch {
    /// The tag the keyword belongs to.
    pub tag: String,
    /// The keyword as normalised.
    pub keyword: String,
    /// Character offset of the mention in the normalised text.
    pub char_offset: usize,
    /// The negation cue that cancelled the mention, if any.
    pub negated_by: Option<String>,
}

/// Per member and tag: how often and when the tag's keywords were mentioned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeywordHits {
    /// The member.
    pub member_id: i64,
    /// The tag.
    pub tag: String,
    /// Un-negated mentions (overlapping keywords of one tag count once).
    pub mentions: u32,
    /// Mentions cancelled by a negation cue.
    pub negated_mentions: u32,
    /// Texts with at least one un-negated mention.
    pub texts: u32,
    /// Time of the latest text with an un-negated mention.
    pub last_hit_at: Option<DateTime<Utc>>,
    /// Distinct keywords mentioned (un-negated), sorted.
    pub keywords: Vec<String>,
}

/// Result of [`KeywordTagger::tag_texts`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeywordScan {
    /// Hit counts per (member, tag), sorted by member then tag.
    pub hits: Vec<KeywordHits>,
    /// One observation per (text, tag) with an un-negated mention, for [`super::update_member_tags`].
    pub observations: Vec<TagObservation>,
}

#[derive(Debug, Clone)]
struct Cue {
    text: String,
    word: bool,
}

/// Compiled keyword definitions: one automaton over every keyword of every tag.
#[derive(Debug, Clone)]
pub struct KeywordTagger {
    defs: Vec<KeywordTagDef>,
    automaton: AhoCorasick,
    /// Per pattern: the normalised keyword, whether it needs an ASCII boundary at start / end, its tags.
    patterns: Vec<(String, bool, bool, Vec<usize>)>,
    cues: Vec<Cue>,
    non_negating: Vec<String>,
    contrast: Vec<Cue>,
    cjk_window_chars: usize,
    word_window: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

fn cue_list(words: &[String]) -> Vec<Cue> {
    words
        .iter()
        .map(|w| normalize_text(w))
        .filter(|w| !w.is_empty())
        .map(|text| Cue { word: text.chars().all(|c| is_word_char(c) || c == '\''), text })
        .collect()
}

/// Byte offset just after the last whole-word (for ASCII cues) or substring occurrence of any cue.
fn last_occurrence_end(scope: &str, cues: &[Cue]) -> Option<usize> {
    cues.iter()
        .filter_map(|cue| {
            scope
                .match_indices(cue.text.as_str())
                .filter(|(i, m)| !cue.word || on_word_boundary(scope, *i, i + m.len()))
                .map(|(i, m)| i + m.len())
                .last()
        })
        .max()
}

fn on_word_boundary(s: &str, start: usize, end: usize) -> bool {
    let before = s[..start].chars().next_back();
    let after = s[end..].chars().next();
    !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char)
}

const CLAUSE_BREAKS: &[char] = &[',', '.', ';', ':', '!', '?', '。', '、', '…', '\n'];

impl KeywordTagger {
    /// Compiles the definitions; rejects empty tags, empty keyword lists and strengths outside (0, 1].
    pub fn new(defs: Vec<KeywordTagDef>, params: &KeywordParams) -> Result<Self, TagError> {
        let mut by_keyword: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, d) in defs.iter().enumerate() {
            let bad = |detail: &str| TagError::InvalidKeywordDef { tag: d.tag.clone(), detail: detail.to_string() };
            if d.tag.trim().is_empty() {
                return Err(bad("the tag name is empty"));
            }
            if !(d.strength > 0.0 && d.strength <= 1.0) {
                return Err(bad(&format!("strength {} is not in (0, 1]", d.strength)));
            }
            let mut any = false;
            for k in &d.keywords {
                let n = normalize_text(k);
                if n.is_empty() {
                    continue;
                }
                any = true;
                let tags = by_keyword.entry(n).or_default();
                if !tags.contains(&i) {
                    tags.push(i);
                }
            }
            if !any {
                return Err(bad("no non-empty keyword"));
            }
        }
        let patterns: Vec<(String, bool, bool, Vec<usize>)> = by_keyword
            .into_iter()
            .map(|(k, tags)| {
                let start = k.chars().next().is_some_and(is_word_char);
                let end = k.chars().next_back().is_some_and(is_word_char);
                (k, start, end, tags)
            })
            .collect();
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(patterns.iter().map(|p| p.0.as_str()))
            .map_err(|e| TagError::Matcher(e.to_string()))?;
        Ok(Self {
            defs,
            automaton,
            patterns,
            cues: cue_list(&params.negation_cues),
            non_negating: params.non_negating.iter().map(|w| normalize_text(w)).filter(|w| !w.is_empty()).collect(),
            contrast: cue_list(&params.contrast_words),
            cjk_window_chars: params.cjk_window_chars,
            word_window: params.word_window,
        })
    }

    /// The negation cue governing a mention that starts at byte `start` of normalised text `s`, if any.
    fn negation(&self, s: &str, start: usize) -> Option<String> {
        let prefix = &s[..start];
        let clause_start =
            prefix.rfind(CLAUSE_BREAKS).map_or(0, |i| i + prefix[i..].chars().next().map_or(1, char::len_utf8));
        let mut scope = &prefix[clause_start..];
        if let Some(end) = last_occurrence_end(scope, &self.contrast) {
            scope = &scope[end..];
        }
        // Mask words that contain a cue but do not negate (不错, 没想到, …).
        let mut masked = scope.to_string();
        for w in &self.non_negating {
            if masked.contains(w.as_str()) {
                masked = masked.replace(w.as_str(), "\u{0}");
            }
        }
        // CJK cues: within the last `cjk_window_chars` characters.
        let tail: String = {
            let chars: Vec<char> = masked.chars().collect();
            chars[chars.len().saturating_sub(self.cjk_window_chars)..].iter().collect()
        };
        if let Some(c) = self.cues.iter().find(|c| !c.word && tail.contains(c.text.as_str())) {
            return Some(c.text.clone());
        }
        // English cues: among the last `word_window` words.
        let words: Vec<&str> =
            masked.split(|c: char| !(is_word_char(c) || c == '\'')).filter(|w| !w.is_empty()).collect();
        let recent = &words[words.len().saturating_sub(self.word_window)..];
        for w in recent.iter().rev() {
            if w.ends_with("n't") {
                return Some((*w).to_string());
            }
            if let Some(c) = self.cues.iter().find(|c| c.word && c.text == *w) {
                return Some(c.text.clone());
            }
        }
        None
    }

    /// Every keyword mention in one text, in order, with the cue that negates it if any.
    pub fn scan(&self, text: &str) -> Vec<KeywordMatch> {
        let s = normalize_text(text);
        let mut out = Vec::new();
        for m in self.automaton.find_overlapping_iter(&s) {
            let Some((keyword, need_start, need_end, tags)) = self.patterns.get(m.pattern().as_usize()) else {
                continue;
            };
            let before_ok = !*need_start || !s[..m.start()].chars().next_back().is_some_and(is_word_char);
            let after_ok = !*need_end || !s[m.end()..].chars().next().is_some_and(is_word_char);
            if !(before_ok && after_ok) {
                continue;
            }
            let negated_by = self.negation(&s, m.start());
            let char_offset = s[..m.start()].chars().count();
            for &t in tags {
                out.push(KeywordMatch {
                    tag: self.defs[t].tag.clone(),
                    keyword: keyword.clone(),
                    char_offset,
                    negated_by: negated_by.clone(),
                });
            }
        }
        out.sort_by(|a, b| (a.char_offset, &a.tag, &a.keyword).cmp(&(b.char_offset, &b.tag, &b.keyword)));
        out
    }

    /// Scans every text (in parallel) and sums hits per member and tag; one observation per text and tag.
    pub fn tag_texts(&self, texts: &[MemberText]) -> KeywordScan {
        let per_text: Vec<Vec<KeywordMatch>> = texts.par_iter().map(|t| self.scan(&t.text)).collect();
        let tag_index: BTreeMap<&str, usize> = self.defs.iter().enumerate().map(|(i, d)| (d.tag.as_str(), i)).collect();
        let mut hits: BTreeMap<(i64, String), KeywordHits> = BTreeMap::new();
        let mut observations = Vec::new();
        for (text, matches) in texts.iter().zip(&per_text) {
            // Per tag in this text: merge overlapping spans of that tag's keywords into mentions.
            let mut by_tag: BTreeMap<&str, Vec<&KeywordMatch>> = BTreeMap::new();
            for m in matches {
                by_tag.entry(m.tag.as_str()).or_default().push(m);
            }
            for (tag, ms) in by_tag {
                let (mut mentions, mut negated) = (0u32, 0u32);
                let mut keywords: Vec<&str> = Vec::new();
                let mut span_end = 0usize;
                for m in &ms {
                    let len = m.keyword.chars().count();
                    let overlaps = mentions + negated > 0 && m.char_offset < span_end;
                    span_end = span_end.max(m.char_offset + len);
                    if overlaps {
                        if m.negated_by.is_none() && !keywords.contains(&m.keyword.as_str()) {
                            keywords.push(&m.keyword);
                        }
                        continue;
                    }
                    if m.negated_by.is_some() {
                        negated += 1;
                    } else {
                        mentions += 1;
                        if !keywords.contains(&m.keyword.as_str()) {
                            keywords.push(&m.keyword);
                        }
                    }
                }
                let entry = hits.entry((text.member_id, tag.to_string())).or_insert_with(|| KeywordHits {
                    member_id: text.member_id,
                    tag: tag.to_string(),
                    mentions: 0,
                    negated_mentions: 0,
                    texts: 0,
                    last_hit_at: None,
                    keywords: Vec::new(),
                });
                entry.negated_mentions += negated;
                if mentions == 0 {
                    continue;
                }
                entry.mentions += mentions;
                entry.texts += 1;
                entry.last_hit_at = entry.last_hit_at.max(Some(text.at));
                for k in &keywords {
                    if !entry.keywords.iter().any(|e| e == k) {
                        entry.keywords.push((*k).to_string());
                    }
                }
                if let Some(def) = tag_index.get(tag).map(|&i| &self.defs[i]) {
                    observations.push(TagObservation {
                        member_id: text.member_id,
                        tag: def.tag.clone(),
                        category: def.category.clone(),
                        source: TagSource::Keyword,
                        at: text.at,
                        strength: def.strength,
                        reason: format!(
                            "text of {} mentions {}",
                            text.at.format("%Y-%m-%d"),
                            keywords.iter().map(|k| format!("“{k}”")).collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
            }
        }
        let hits = hits
            .into_values()
            .map(|mut h| {
                h.keywords.sort();
                h
            })
            .collect();
        KeywordScan { hits, observations }
    }
}

#[cfg(test)]
mod tests;
