//! Identities: the many ways a shop knows one person (phone, email, WeChat ids, marketplace buyer ids,
//! store cards, customer numbers, anonymous visitor ids), normalized so the same person always yields the
//! same `(kind, value)` pair, which is unique across the shop.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Checked, Invalid};

/// The kind of an identity. Marketplace buyer ids are namespaced by platform (`buyer_id.tmall`),
/// because the same string means different people on different marketplaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityKind {
    Phone,
    Email,
    WechatOpenid,
    WechatUnionid,
    /// A marketplace's buyer id; the string is the platform code (`tmall`, `jd`, `douyin`…).
    BuyerId(String),
    StoreCard,
    CustomerNo,
    AnonymousId,
}

impl IdentityKind {
    /// Personal data is encrypted at rest and found through a blind index; other kinds are pseudonymous
    /// identifiers stored as normalized text.
    pub fn is_personal(&self) -> bool {
        matches!(self, IdentityKind::Phone | IdentityKind::Email)
    }

    /// Normalize a raw value of this kind; the result is what uniqueness and look-ups use.
    pub fn normalize(&self, raw: &str) -> Checked<String> {
        match self {
            IdentityKind::Phone => normalize_phone(raw),
            IdentityKind::Email => normalize_email(raw),
            _ => normalize_token(raw),
        }
    }

    /// How the value is shown to a caller who may not see personal data.
    pub fn mask(&self, normalized: &str) -> String {
        match self {
            IdentityKind::Phone => mask_phone(normalized),
            IdentityKind::Email => mask_email(normalized),
            _ => normalized.to_string(),
        }
    }
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityKind::Phone => f.write_str("phone"),
            IdentityKind::Email => f.write_str("email"),
            IdentityKind::WechatOpenid => f.write_str("wechat_openid"),
            IdentityKind::WechatUnionid => f.write_str("wechat_unionid"),
            IdentityKind::BuyerId(p) => write!(f, "buyer_id.{p}"),
            IdentityKind::StoreCard => f.write_str("store_card"),
            IdentityKind::CustomerNo => f.write_str("customer_no"),
            IdentityKind::AnonymousId => f.write_str("anonymous_id"),
        }
    }
}

impl FromStr for IdentityKind {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "phone" => IdentityKind::Phone,
            "email" => IdentityKind::Email,
            "wechat_openid" => IdentityKind::WechatOpenid,
            "wechat_unionid" => IdentityKind::WechatUnionid,
            "store_card" => IdentityKind::StoreCard,
            "customer_no" => IdentityKind::CustomerNo,
            "anonymous_id" => IdentityKind::AnonymousId,
            other => match other.strip_prefix("buyer_id.") {
                Some(p) if is_code(p) => IdentityKind::BuyerId(p.to_string()),
                _ => {
                    return Err(Invalid::new(
                        "unknown_identity_kind",
                        "kind",
                        format!(
                            "unknown identity kind `{other}`; expected phone, email, wechat_openid, wechat_unionid, \
                             buyer_id.<platform>, store_card, customer_no or anonymous_id"
                        ),
                    ));
                }
            },
        })
    }
}

impl Serialize for IdentityKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IdentityKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e: Invalid| serde::de::Error::custom(e.message))
    }
}

impl utoipa::PartialSchema for IdentityKind {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(
                r"^(phone|email|wechat_openid|wechat_unionid|store_card|customer_no|anonymous_id|buyer_id\.[a-z0-9_]{1,32})$",
            ))
            .description(Some("Identity kind; marketplace buyer ids are `buyer_id.<platform>`"))
            .into()
    }
}

impl ToSchema for IdentityKind {}

/// A lower-case code of letters, digits and underscores: channel, store and platform codes.
pub fn is_code(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// An identity as received from a caller, before normalization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IdentityInput {
    pub kind: IdentityKind,
    pub value: String,
}

impl IdentityInput {
    pub fn new(kind: IdentityKind, value: impl Into<String>) -> Self {
        Self { kind, value: value.into() }
    }

    /// Normalize into the canonical form; `field` names where it came from for the error.
    pub fn normalize(&self) -> Checked<Identity> {
        let value = self.kind.normalize(&self.value).map_err(|e| e.within("value"))?;
        Ok(Identity { kind: self.kind.clone(), value })
    }
}

/// A normalized identity: the same person always gives the same value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Identity {
    pub kind: IdentityKind,
    pub value: String,
}

/// Phone numbers become digits with the country code (`8613812341234`). A bare 11-digit number starting
/// with 1 is a mainland China mobile number, the common case for the shops Huiyuan serves.
pub fn normalize_phone(raw: &str) -> Checked<String> {
    let trimmed = raw.trim();
    let mut digits = String::with_capacity(trimmed.len());
    for (i, c) in trimmed.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => {}
            ' ' | '-' | '(' | ')' | '.' => {}
            _ => {
                return Err(Invalid::new(
                    "invalid_phone",
                    "",
                    format!("phone number contains `{c}`; use digits, spaces, dashes and a leading +"),
                ));
            }
        }
    }
    let international = trimmed.starts_with('+') || digits.starts_with("00");
    let digits = digits.strip_prefix("00").map(str::to_string).unwrap_or(digits);
    let full =
        if !international && digits.len() == 11 && digits.starts_with('1') { format!("86{digits}") } else { digits };
    if !(8..=15).contains(&full.len()) {
        return Err(Invalid::new(
            "invalid_phone",
            "",
            "phone number must have 8 to 15 digits including the country code",
        ));
    }
    Ok(full)
}

/// Emails are trimmed and lower-cased; the shape is checked, not deliverability.
pub fn normalize_email(raw: &str) -> Checked<String> {
    let e = raw.trim().to_lowercase();
    let valid = match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !e.chars().any(char::is_whitespace)
        }
        None => false,
    };
    if !valid || e.len() > 254 {
        return Err(Invalid::new("invalid_email", "", format!("`{}` is not an email address", raw.trim())));
    }
    Ok(e)
}

/// Opaque ids (openids, buyer ids, card numbers) are trimmed and must be printable.
pub fn normalize_token(raw: &str) -> Checked<String> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(Invalid::new("empty_value", "", "identity value is empty"));
    }
    if t.len() > 128 || t.chars().any(char::is_control) {
        return Err(Invalid::new("invalid_identity", "", "identity value must be at most 128 printable characters"));
    }
    Ok(t.to_string())
}

/// `8613812341234` → `138****1234`; other countries keep their code: `+44 79****0123`.
pub fn mask_phone(normalized: &str) -> String {
    let (prefix, national) = match normalized.strip_prefix("86") {
        Some(n) if n.len() == 11 => (String::new(), n),
        _ => {
            let cc = normalized.len().saturating_sub(10).clamp(1, 3);
            (format!("+{} ", &normalized[..cc]), &normalized[cc..])
        }
    };
    let n = national.len();
    if n <= 7 {
        return format!("{prefix}{}", "*".repeat(n));
    }
    format!("{prefix}{}****{}", &national[..3], &national[n - 4..])
}

/// `zhang.wei@example.com` → `z***@example.com`.
pub fn mask_email(normalized: &str) -> String {
    match normalized.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

/// `张伟` → `张*`, `Ada Lovelace` → `A*** L***`.
pub fn mask_name(name: &str) -> String {
    let name = name.trim();
    if name.is_ascii() {
        name.split_whitespace().map(|w| format!("{}***", w.chars().next().unwrap_or('*'))).collect::<Vec<_>>().join(" ")
    } else {
        let mut chars = name.chars();
        match chars.next() {
            Some(first) => format!("{first}{}", "*".repeat(chars.count().max(1))),
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalize_to_country_code_digits() {
        assert_eq!(normalize_phone("138 1234 1234").unwrap(), "8613812341234");
        assert_eq!(normalize_phone("+86 138-1234-1234").unwrap(), "8613812341234");
        assert_eq!(normalize_phone("0086 13812341234").unwrap(), "8613812341234");
        assert_eq!(normalize_phone("+44 7911 123456").unwrap(), "447911123456");
        assert_eq!(normalize_phone("12345").unwrap_err().code, "invalid_phone");
        assert_eq!(normalize_phone("138x").unwrap_err().code, "invalid_phone");
    }

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(normalize_email("  Zhang.Wei@Example.COM ").unwrap(), "zhang.wei@example.com");
        for bad in ["a@b", "@b.com", "a b@c.com", "abc", "a@.com"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn masks_hide_the_middle() {
        assert_eq!(mask_phone("8613812341234"), "138****1234");
        assert_eq!(mask_phone("447911123456"), "+44 791****3456");
        assert_eq!(mask_email("zhang.wei@example.com"), "z***@example.com");
        assert_eq!(mask_name("张伟"), "张*");
        assert_eq!(mask_name("Ada Lovelace"), "A*** L***");
    }

    #[test]
    fn kinds_round_trip_through_text() {
        for k in [
            "phone",
            "email",
            "wechat_openid",
            "wechat_unionid",
            "buyer_id.tmall",
            "store_card",
            "customer_no",
            "anonymous_id",
        ] {
            assert_eq!(k.parse::<IdentityKind>().unwrap().to_string(), k);
        }
        assert!("buyer_id.".parse::<IdentityKind>().is_err());
        assert!("twitter".parse::<IdentityKind>().is_err());
    }
}
