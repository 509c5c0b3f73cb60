//! Huiyuan's own layouts: members from CSV or JSON Lines, orders and events from JSON Lines (one API
//! input object per line, exactly as `POST /v1/...` takes them). A line that is not valid JSON for the
//! input type is rejected with serde's message.

use chrono::NaiveDate;
use serde::de::DeserializeOwned;

use super::reader::{self, Header, field, line_of, parse_utc};
use super::{BATCH, Ctx, ImportError};
use crate::error::Invalid;
use crate::events::EventInput;
use crate::members::{ConsentInput, Gender, IdentityInput, IdentityKind, MemberInput};
use crate::store::{EventOutcome, UpsertOutcome, WriteOutcome};

/// Profile columns of the members CSV; every other column must be an identity kind.
const PROFILE: [&str; 11] = [
    "name",
    "gender",
    "birthday",
    "city",
    "country",
    "registered_at",
    "registration_channel",
    "consent_sms",
    "consent_email",
    "consent_wechat",
    "consent_push",
];

/// Where each members-CSV column goes.
pub(crate) struct MemberCols {
    identities: Vec<(usize, IdentityKind)>,
    profile: [Option<usize>; 11],
}

impl MemberCols {
    pub(crate) fn find(h: &Header) -> Result<MemberCols, ImportError> {
        let mut identities = Vec::new();
        for (i, name) in h.names().enumerate() {
            let name = name.trim().to_ascii_lowercase();
            if PROFILE.contains(&name.as_str()) {
                continue;
            }
            match name.parse::<IdentityKind>() {
                Ok(kind) => identities.push((i, kind)),
                Err(_) => {
                    return Err(ImportError::UnknownColumn {
                        path: h.path().to_path_buf(),
                        column: name,
                        expected: format!(
                            "identity kinds (phone, email, wechat_openid, wechat_unionid, customer_no, store_card, \
                             anonymous_id, buyer_id.<platform>) or {}",
                            PROFILE.join(", ")
                        ),
                    });
                }
            }
        }
        if identities.is_empty() {
            return Err(ImportError::NoIdentityColumn {
                path: h.path().to_path_buf(),
                kinds: "phone, email, wechat_openid, wechat_unionid, customer_no, store_card, anonymous_id, buyer_id.<platform>"
                    .into(),
                header: h.names().collect::<Vec<_>>().join(","),
            });
        }
        Ok(MemberCols { identities, profile: PROFILE.map(|p| h.optional(p)) })
    }
}

fn parse_bool(s: &str, field: &str) -> Result<Option<bool>, Invalid> {
    match s.to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "1" | "true" | "yes" | "y" => Ok(Some(true)),
        "0" | "false" | "no" | "n" => Ok(Some(false)),
        _ => Err(Invalid::new("invalid_bool", field, format!("`{s}` is not true/false, yes/no or 1/0"))),
    }
}

/// One members-CSV row as a member input; empty cells are absent.
pub(crate) fn member_row(rec: &csv::StringRecord, c: &MemberCols) -> Result<MemberInput, Invalid> {
    let identities: Vec<IdentityInput> = c
        .identities
        .iter()
        .filter_map(|(i, kind)| {
            Some(field(rec, Some(*i))).filter(|v| !v.is_empty()).map(|v| IdentityInput::new(kind.clone(), v))
        })
        .collect();
    let p = |name: &str| field(rec, PROFILE.iter().position(|n| *n == name).and_then(|i| c.profile[i]));
    let text = |name: &str| Some(p(name).to_string()).filter(|s| !s.is_empty());
    let gender = match p("gender") {
        "" => None,
        g => Some(Gender::parse(g).ok_or_else(|| {
            Invalid::new("invalid_gender", "gender", format!("`{g}` is not female, male, other or unknown"))
        })?),
    };
    let birthday =
        match p("birthday") {
            "" => None,
            b => Some(NaiveDate::parse_from_str(b, "%Y-%m-%d").map_err(|_| {
                Invalid::new("invalid_date", "birthday", format!("`{b}` is not a date like 1990-05-01"))
            })?),
        };
    let registered_at = match p("registered_at") {
        "" => None,
        t => Some(parse_utc(t, "registered_at")?),
    };
    let consent = ConsentInput {
        sms: parse_bool(p("consent_sms"), "consent_sms")?,
        email: parse_bool(p("consent_email"), "consent_email")?,
        wechat: parse_bool(p("consent_wechat"), "consent_wechat")?,
        push: parse_bool(p("consent_push"), "consent_push")?,
    };
    Ok(MemberInput {
        identities,
        name: text("name"),
        gender,
        birthday,
        city: text("city"),
        country: text("country"),
        registered_at,
        registration_channel: text("registration_channel"),
        consent: (consent != ConsentInput::default()).then_some(consent),
        referred_by: None,
    })
}

/// A member input waiting for its batch, with where it came from.
type Pending<T> = Vec<(u64, String, T)>;

async fn flush_members(ctx: &mut Ctx<'_>, pending: &mut Pending<MemberInput>) -> Result<(), ImportError> {
    if pending.is_empty() {
        return Ok(());
    }
    let inputs: Vec<MemberInput> = pending.iter().map(|(_, _, m)| m.clone()).collect();
    let results = ctx.app.upsert_members(&inputs, &ctx.who).await?;
    for ((line, raw, _), r) in pending.drain(..).zip(results) {
        match r {
            Ok(UpsertOutcome::Created(_) | UpsertOutcome::Updated(..)) => ctx.summary.imported += 1,
            Ok(UpsertOutcome::Unchanged(_)) => ctx.summary.duplicates += 1,
            Ok(UpsertOutcome::Conflict(ids)) => {
                let e = Invalid::new(
                    "conflict",
                    "identities",
                    format!("the identities belong to members {ids:?}; merge them first"),
                );
                ctx.reject(line, &e, &raw)?;
            }
            Err(e) => ctx.reject(line, &e, &raw)?,
        }
    }
    Ok(())
}

pub(crate) async fn members_csv(ctx: &mut Ctx<'_>) -> Result<(), ImportError> {
    let path = ctx.opts.path.clone();
    let (mut rdr, h) = reader::csv_reader(&path)?;
    let cols = MemberCols::find(&h)?;
    let mut pending = Vec::new();
    let mut rec = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(source) => return Err(ImportError::Csv { path, source }),
        }
        ctx.row_read();
        match member_row(&rec, &cols) {
            Ok(m) => pending.push((line_of(&rec), reader::raw(&rec), m)),
            Err(e) => ctx.reject(line_of(&rec), &e, &reader::raw(&rec))?,
        }
        if pending.len() >= BATCH {
            flush_members(ctx, &mut pending).await?;
        }
    }
    flush_members(ctx, &mut pending).await
}

/// Read JSON Lines of `T`, handing batches to `flush`; malformed lines are rejected as they come.
macro_rules! jsonl_import {
    ($ctx:expr, $ty:ty, $flush:expr) => {{
        let path = $ctx.opts.path.clone();
        let mut pending: Pending<$ty> = Vec::new();
        for (line, text) in reader::jsonl_lines(&path)? {
            $ctx.row_read();
            let text = match text {
                Ok(t) => t,
                Err(e) => {
                    $ctx.reject(line, &Invalid::new("invalid_text", "", e.to_string()), "")?;
                    continue;
                }
            };
            match parse_json::<$ty>(&text) {
                Ok(v) => pending.push((line, text, v)),
                Err(e) => $ctx.reject(line, &e, &text)?,
            }
            if pending.len() >= BATCH {
                $flush($ctx, &mut pending).await?;
            }
        }
        $flush($ctx, &mut pending).await
    }};
}

/// One JSON line as `T`, serde's message as the reason.
pub(crate) fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T, Invalid> {
    serde_json::from_str(text).map_err(|e| Invalid::new("invalid_json", "", e.to_string()))
}

pub(crate) async fn members_jsonl(ctx: &mut Ctx<'_>) -> Result<(), ImportError> {
    jsonl_import!(ctx, MemberInput, flush_members)
}

async fn flush_orders(
    ctx: &mut Ctx<'_>,
    pending: &mut Pending<crate::commerce::OrderInput>,
) -> Result<(), ImportError> {
    if pending.is_empty() {
        return Ok(());
    }
    let inputs: Vec<_> = pending.iter().map(|(_, _, o)| o.clone()).collect();
    let outcomes = ctx.app.record_orders(&inputs, &ctx.who).await?;
    for ((line, raw, _), o) in pending.drain(..).zip(outcomes) {
        match o {
            WriteOutcome::Created(_) => ctx.summary.imported += 1,
            WriteOutcome::Duplicate(_) => ctx.summary.duplicates += 1,
            WriteOutcome::Conflict(_) => ctx.reject(
                line,
                &Invalid::new("conflict", "order_no", "a different order with this order_no is already stored"),
                &raw,
            )?,
            WriteOutcome::Rejected(e) => ctx.reject(line, &e, &raw)?,
        }
    }
    Ok(())
}

pub(crate) async fn orders_jsonl(ctx: &mut Ctx<'_>) -> Result<(), ImportError> {
    jsonl_import!(ctx, crate::commerce::OrderInput, flush_orders)
}

async fn flush_events(ctx: &mut Ctx<'_>, pending: &mut Pending<EventInput>) -> Result<(), ImportError> {
    if pending.is_empty() {
        return Ok(());
    }
    let inputs: Vec<_> = pending.iter().map(|(_, _, e)| e.clone()).collect();
    let outcomes = ctx.app.record_events(&inputs).await?;
    for ((line, raw, _), o) in pending.drain(..).zip(outcomes) {
        match o {
            EventOutcome::Stored => ctx.summary.imported += 1,
            EventOutcome::Duplicate => ctx.summary.duplicates += 1,
            EventOutcome::Rejected(e) => ctx.reject(line, &e, &raw)?,
        }
    }
    Ok(())
}

pub(crate) async fn events_jsonl(ctx: &mut Ctx<'_>) -> Result<(), ImportError> {
    jsonl_import!(ctx, EventInput, flush_events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_rows_map_columns_and_name_bad_ones() {
        let text = "phone,customer_no,name,gender,birthday,consent_sms\n\
                    13812341234,C1,张伟,男,1990-05-01,yes\n\
                    ,C2,,x,,\n\
                    ,C3,,,1990-13-01,\n";
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let h = Header::for_test(r.headers().unwrap().clone());
        let c = MemberCols::find(&h).unwrap();
        let out: Vec<_> = r.records().map(|rec| member_row(&rec.unwrap(), &c)).collect();
        let m = out[0].as_ref().unwrap();
        assert_eq!(m.identities.len(), 2);
        assert_eq!(m.gender, Some(Gender::Male));
        assert_eq!(m.consent.and_then(|c| c.sms), Some(true));
        assert_eq!(out[1].as_ref().unwrap_err().field, "gender");
        assert_eq!(out[2].as_ref().unwrap_err().field, "birthday");
        let bad = Header::for_test(csv::StringRecord::from(vec!["phone", "nickname"]));
        assert!(matches!(MemberCols::find(&bad), Err(ImportError::UnknownColumn { .. })));
    }

    #[test]
    fn malformed_json_says_why() {
        let e = parse_json::<MemberInput>("{\"identities\": [").unwrap_err();
        assert_eq!(e.code, "invalid_json");
        assert!(e.message.contains("line 1"), "{}", e.message);
    }
}
