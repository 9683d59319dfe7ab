//! Query parameters of the read API: the listing's filters, page sizes and
//! the keyset cursor.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::db::messages::{Keyset, ListFilter};
use crate::domain::Status;
use crate::error::ApiError;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
// Read as text and checked by parse_list_params, for our own 400 sentences;
// the document declares what that check accepts.
pub struct ListParams {
    /// Only messages whose current status is this: `sent`, `unreported`,
    /// `failed`, `delivered` or `read`.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// Only messages to this recipient.
    user_number: Option<String>,
    /// Only messages registered with this tag.
    tag: Option<String>,
    /// Only messages whose status changed after this RFC 3339 time.
    #[param(value_type = Option<String>, format = DateTime)]
    updated_after: Option<String>,
    /// Only messages whose status last changed before this RFC 3339 time.
    #[param(value_type = Option<String>, format = DateTime)]
    updated_before: Option<String>,
    /// Page size, 1 to 500, default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    cursor: Option<String>,
}

/// A page size: 100 when absent, else a whole number from 1 to `max`.
pub fn parse_limit(limit: Option<&str>, max: i64) -> Result<i64, ApiError> {
    let Some(l) = limit else { return Ok(100) };
    l.parse::<i64>()
        .ok()
        .filter(|l| (1..=max).contains(l))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_limit",
                format!("`limit` must be a whole number from 1 to {max}."),
            )
        })
}

pub fn parse_list_params(p: ListParams) -> Result<ListFilter, ApiError> {
    let status = p
        .status
        .map(|s| {
            Status::parse(&s).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_status",
                    "`status` must be one of `sent`, `unreported`, `failed`, `delivered` or `read`.",
                )
            })
        })
        .transpose()?;
    let updated_after = parse_time("updated_after", p.updated_after)?;
    let updated_before = parse_time("updated_before", p.updated_before)?;
    let limit = parse_limit(p.limit.as_deref(), 500)?;
    // A cursor comes from a page below `updated_before` already; without
    // one the range's end is where the first page starts, strictly before
    // it (any message id sorts after '').
    let after = match p.cursor {
        Some(c) => Some(decode_cursor(&c)?),
        None => updated_before.map(|t| Keyset {
            updated_at: t,
            message_id: String::new(),
        }),
    };
    if p.user_number
        .as_ref()
        .is_some_and(|u| u.is_empty() || u.contains('\0'))
    {
        return Err(ApiError::bad_request(
            "invalid_user_number",
            "`user_number` must not be empty.",
        ));
    }
    check_tag(p.tag.as_deref())?;
    Ok(ListFilter {
        status,
        user_number: p.user_number,
        tag: p.tag,
        updated_after,
        after,
        limit: limit + 1,
    })
}

pub fn encode_cursor(k: &Keyset) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}:{}",
        k.updated_at.timestamp_micros(),
        k.message_id
    ))
}

fn decode_cursor(cursor: &str) -> Result<Keyset, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_cursor",
            "`cursor` must be a `next_cursor` this API returned.",
        )
    };
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, message_id) = raw.split_once(':').ok_or_else(bad)?;
    let updated_at = micros
        .parse()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    if message_id.is_empty() || message_id.contains('\0') {
        return Err(bad());
    }
    Ok(Keyset {
        updated_at,
        message_id: message_id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let k = Keyset {
            updated_at: Utc::now(),
            message_id: "a:b:c".into(),
        };
        let decoded = decode_cursor(&encode_cursor(&k)).unwrap();
        assert_eq!(decoded.message_id, k.message_id);
        assert_eq!(
            decoded.updated_at.timestamp_micros(),
            k.updated_at.timestamp_micros()
        );
        for bad in [
            "",
            "!!!",
            &URL_SAFE_NO_PAD.encode("nocolon"),
            &URL_SAFE_NO_PAD.encode("x:y"),
            &URL_SAFE_NO_PAD.encode("1:"),
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}

/// `GET …/export`: the listing's filters (without paging), a range end and
/// the format.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `csv` (default) or `ndjson`.
    #[param(value_type = Option<String>, pattern = "^(csv|ndjson)$")]
    format: Option<String>,
    /// Only messages whose current status is this.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// Only messages to this recipient.
    user_number: Option<String>,
    /// Only messages registered with this tag.
    tag: Option<String>,
    /// Only messages whose status last changed after this RFC 3339 time.
    #[param(value_type = Option<String>, format = DateTime)]
    updated_after: Option<String>,
    /// Only messages whose status last changed before this RFC 3339 time.
    #[param(value_type = Option<String>, format = DateTime)]
    updated_before: Option<String>,
}

/// What an export asks for: the filter of its first page (its `limit` is
/// the page size), the format, and the range for the file's name.
pub struct ExportQuery {
    pub filter: ListFilter,
    pub format: crate::export::Format,
    pub updated_before: Option<DateTime<Utc>>,
}

pub fn parse_export_params(p: ExportParams) -> Result<ExportQuery, ApiError> {
    let format =
        crate::export::Format::parse(p.format.as_deref().unwrap_or("csv")).ok_or_else(|| {
            ApiError::bad_request("invalid_format", "`format` must be `csv` or `ndjson`.")
        })?;
    let mut filter = parse_list_params(ListParams {
        status: p.status,
        user_number: p.user_number,
        tag: p.tag,
        updated_after: p.updated_after,
        updated_before: p.updated_before,
        limit: None,
        cursor: None,
    })?;
    filter.limit = crate::export::PAGE;
    Ok(ExportQuery {
        updated_before: filter.after.as_ref().map(|k| k.updated_at),
        filter,
        format,
    })
}

/// An optional RFC 3339 parameter `name`.
fn parse_time(name: &str, value: Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_time",
                        format!("`{name}` must be an RFC 3339 time such as 2026-11-23T10:00:00Z."),
                    )
                })
        })
        .transpose()
}

/// A tag as registrations give them: 1 to 64 characters without NUL.
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty() && tag.chars().count() <= 64 && !tag.contains('\0')
}

/// The `tag` filter of listings, exports and statistics.
pub fn check_tag(tag: Option<&str>) -> Result<(), ApiError> {
    match tag {
        Some(t) if !valid_tag(t) => Err(ApiError::bad_request(
            "invalid_tag",
            "`tag` must be 1 to 64 characters without NUL.",
        )),
        _ => Ok(()),
    }
}
