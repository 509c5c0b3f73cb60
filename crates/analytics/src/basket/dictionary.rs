//! SKU ↔ item id mapping: the miner works on dense `u32` ids, the store and the console speak SKUs.

use std::collections::HashMap;

use serde::Serialize;

use super::{BasketError, Rule};

/// A bijection between item keys (SKUs) and the `u32` ids [`super::mine`] takes. Ids follow the keys'
/// byte order, so sorting by id is sorting by SKU and the mapping does not depend on basket order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ItemDictionary {
    keys: Vec<String>,
    #[serde(skip)]
    ids: HashMap<String, u32>,
}

impl ItemDictionary {
    /// Assigns an id to every key in `baskets` and returns the dictionary with the baskets as ids.
    pub fn from_baskets<S: AsRef<str>>(baskets: &[Vec<S>]) -> Result<(Self, Vec<Vec<u32>>), BasketError> {
        // Distinct keys first: tens of millions of lines name a few thousand SKUs.
        let dict = Self::from_keys(baskets.iter().flatten().map(AsRef::as_ref))?;
        let encoded = baskets.iter().map(|b| dict.encode(b.iter().map(AsRef::as_ref))).collect();
        Ok((dict, encoded))
    }

    /// The dictionary of the distinct keys among `keys` (in any order, repeated or not), for callers that
    /// encode their baskets as they assemble them instead of holding them as text first.
    pub fn from_keys<'k>(keys: impl IntoIterator<Item = &'k str>) -> Result<Self, BasketError> {
        let distinct: std::collections::HashSet<&str> = keys.into_iter().collect();
        let mut keys: Vec<&str> = distinct.into_iter().collect();
        keys.sort_unstable();
        if keys.len() > u32::MAX as usize {
            return Err(BasketError::TooManyItems);
        }
        let ids: HashMap<String, u32> = keys.iter().enumerate().map(|(i, k)| (k.to_string(), i as u32)).collect();
        let keys = keys.into_iter().map(str::to_string).collect();
        Ok(ItemDictionary { keys, ids })
    }

    /// A basket as ids; keys the dictionary does not hold are left out.
    pub fn encode<'k>(&self, basket: impl IntoIterator<Item = &'k str>) -> Vec<u32> {
        basket.into_iter().filter_map(|k| self.ids.get(k).copied()).collect()
    }

    /// The id of `key`, if it occurred in the baskets.
    pub fn id(&self, key: &str) -> Option<u32> {
        self.ids.get(key).copied()
    }

    /// The key of `id`, if the dictionary assigned it.
    pub fn key(&self, id: u32) -> Option<&str> {
        self.keys.get(id as usize).map(String::as_str)
    }

    /// The keys of `ids`, in the same order; `None` if any id is unknown.
    pub fn keys(&self, ids: &[u32]) -> Option<Vec<&str>> {
        ids.iter().map(|&id| self.key(id)).collect()
    }

    /// A rule in words, e.g. `{85099B, 22386} ⇒ {21931}`, for logs and the console.
    pub fn describe(&self, rule: &Rule) -> String {
        let side = |ids: &[u32]| {
            let names: Vec<&str> = ids.iter().map(|&id| self.key(id).unwrap_or("?")).collect();
            format!("{{{}}}", names.join(", "))
        };
        format!(
            "{} ⇒ {} (support {:.4}, confidence {:.3}, lift {:.2})",
            side(&rule.antecedent),
            side(&rule.consequent),
            rule.support,
            rule.confidence,
            rule.lift
        )
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key was seen.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
