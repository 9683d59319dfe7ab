//! A delivery report as KooMessage sends it, parsed and validated.

use serde_json::{Map, Value};

use super::Reported;

const MAX_FIELD_CHARS: usize = 128;

/// A validated report. `extra` holds every field beyond the four of the
/// seed; it is kept with the history entry (SPEC §5).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub message_id: String,
    pub sender: String,
    pub user_number: String,
    pub status: Reported,
    pub extra: Map<String, Value>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReportError {
    #[error("The body is not valid JSON: {0}.")]
    NotJson(String),
    #[error("The body must be a JSON object.")]
    NotObject,
    #[error("The field `{0}` is missing.")]
    Missing(&'static str),
    #[error("The field `{0}` must be a string.")]
    NotString(&'static str),
    #[error("The field `{0}` must not be empty.")]
    Empty(&'static str),
    #[error("The field `{0}` is longer than 128 characters.")]
    TooLong(&'static str),
    #[error("The field `{0}` contains a NUL character, which cannot be stored.")]
    Nul(&'static str),
    #[error(
        "The fields beyond the four of a report contain a NUL character, which cannot be stored."
    )]
    NulInExtra,
    #[error(
        "The field `status` must be a lowercase word such as `delivered`, `read` or `failed` (letters and `_`, at most 32)."
    )]
    BadStatus,
}

impl ReportError {
    pub fn code(&self) -> &'static str {
        match self {
            ReportError::NotJson(_) => "invalid_json",
            ReportError::NotObject => "not_an_object",
            ReportError::Missing(_) => "missing_field",
            ReportError::BadStatus => "invalid_status",
            _ => "invalid_field",
        }
    }
}

impl Report {
    pub fn from_json(body: &[u8]) -> Result<Report, ReportError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ReportError::NotJson(e.to_string()))?;
        let Value::Object(mut fields) = value else {
            return Err(ReportError::NotObject);
        };
        let message_id = take_string(&mut fields, "message_id")?;
        let sender = take_string(&mut fields, "sender")?;
        let user_number = take_string(&mut fields, "user_number")?;
        let status = take_string(&mut fields, "status")?;
        let status = Reported::parse(&status).ok_or(ReportError::BadStatus)?;
        // PostgreSQL text and jsonb cannot hold U+0000; refuse it here rather
        // than fail at the database.
        if fields.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
            return Err(ReportError::NulInExtra);
        }
        Ok(Report {
            message_id,
            sender,
            user_number,
            status,
            extra: fields,
        })
    }
}

fn take_string(fields: &mut Map<String, Value>, name: &'static str) -> Result<String, ReportError> {
    match fields.remove(name) {
        None => Err(ReportError::Missing(name)),
        Some(Value::String(s)) if s.is_empty() => Err(ReportError::Empty(name)),
        Some(Value::String(s)) if s.chars().count() > MAX_FIELD_CHARS => {
            Err(ReportError::TooLong(name))
        }
        Some(Value::String(s)) if s.contains('\0') => Err(ReportError::Nul(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ReportError::NotString(name)),
    }
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Report, ReportError> {
        Report::from_json(s.as_bytes())
    }

    #[test]
    fn parses_the_seed_example_and_keeps_extra_fields() {
        let r = parse(
            r#"{"sender":"86173xxxx4526","user_number":"86187xxxx5632",
               "message_id":"044852ee407b40ec88ea65adb73ff5c27","status":"read","x":{"y":1}}"#,
        )
        .unwrap();
        assert_eq!(r.status, Reported::Ranked(crate::domain::Status::Read));
        assert_eq!(r.message_id, "044852ee407b40ec88ea65adb73ff5c27");
        assert_eq!(r.extra.len(), 1);
        assert_eq!(r.extra["x"]["y"], 1);
    }

    #[test]
    fn every_rejection_has_its_own_error() {
        let ok = |f: &str| {
            format!(r#"{{"message_id":"m","sender":"s","user_number":"u","status":"read"{f}}}"#)
        };
        assert!(matches!(parse("{"), Err(ReportError::NotJson(_))));
        assert_eq!(parse("[1]"), Err(ReportError::NotObject));
        assert_eq!(
            parse(r#"{"sender":"s","user_number":"u","status":"read"}"#),
            Err(ReportError::Missing("message_id"))
        );
        assert_eq!(
            parse(r#"{"message_id":5,"sender":"s","user_number":"u","status":"read"}"#),
            Err(ReportError::NotString("message_id"))
        );
        assert_eq!(
            parse(r#"{"message_id":"","sender":"s","user_number":"u","status":"read"}"#),
            Err(ReportError::Empty("message_id"))
        );
        let long = "é".repeat(129);
        assert_eq!(
            parse(&format!(
                r#"{{"message_id":"m","sender":"{long}","user_number":"u","status":"read"}}"#
            )),
            Err(ReportError::TooLong("sender"))
        );
        assert!(
            parse(&format!(
                r#"{{"message_id":"m","sender":"{}","user_number":"u","status":"read"}}"#,
                "é".repeat(128)
            ))
            .is_ok()
        );
        assert_eq!(
            parse(r#"{"message_id":"m","sender":"s","user_number":"u","status":"Read!"}"#),
            Err(ReportError::BadStatus)
        );
        assert_eq!(
            parse(r#"{"message_id":"m\u0000","sender":"s","user_number":"u","status":"read"}"#),
            Err(ReportError::Nul("message_id"))
        );
        assert_eq!(
            parse(&ok(r#","a":[{"b":"\u0000"}]"#)),
            Err(ReportError::NulInExtra)
        );
    }
}
