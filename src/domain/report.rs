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
        let Fields {
            message_id,
            sender,
            user_number,
            status,
            extra,
        } = serde_json::from_slice(body).map_err(|e| match e.classify() {
            // The only typed value read is the top-level map itself.
            serde_json::error::Category::Data => ReportError::NotObject,
            _ => ReportError::NotJson(e.to_string()),
        })?;
        let message_id = string(message_id, "message_id")?;
        let sender = string(sender, "sender")?;
        let user_number = string(user_number, "user_number")?;
        let status = string(status, "status")?;
        let status = Reported::parse(&status).ok_or(ReportError::BadStatus)?;
        // PostgreSQL text and jsonb cannot hold U+0000; refuse it here rather
        // than fail at the database.
        if extra.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
            return Err(ReportError::NulInExtra);
        }
        Ok(Report {
            message_id,
            sender,
            user_number,
            status,
            extra,
        })
    }
}

/// A report's object as sent: the four fields of the seed apart, the rest
/// as they are. Read field by field rather than as one `Value`, whose map
/// would hash and then give up the four fields again (1.6 % of a
/// callback's instructions under callgrind). A repeated field keeps its
/// last value, as a `Value` would.
#[derive(Default)]
struct Fields {
    message_id: Option<Value>,
    sender: Option<Value>,
    user_number: Option<Value>,
    status: Option<Value>,
    extra: Map<String, Value>,
}

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> serde::de::Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Value>()?;
            let slot = match key.as_str() {
                "message_id" => &mut fields.message_id,
                "sender" => &mut fields.sender,
                "user_number" => &mut fields.user_number,
                "status" => &mut fields.status,
                _ => {
                    fields.extra.insert(key, value);
                    continue;
                }
            };
            *slot = Some(value);
        }
        Ok(fields)
    }
}

fn string(value: Option<Value>, name: &'static str) -> Result<String, ReportError> {
    match value {
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
    fn a_repeated_field_keeps_its_last_value() {
        let r = parse(
            r#"{"message_id":"m1","sender":"s","user_number":"u","status":"read",
               "message_id":"m2","x":1,"x":2}"#,
        )
        .unwrap();
        assert_eq!(r.message_id, "m2");
        assert_eq!(r.extra["x"], 2);
        assert_eq!(
            parse(
                r#"{"message_id":"m","sender":"s","user_number":"u","status":"read","status":7}"#
            ),
            Err(ReportError::NotString("status"))
        );
    }

    #[test]
    fn every_rejection_has_its_own_error() {
        let ok = |f: &str| {
            format!(r#"{{"message_id":"m","sender":"s","user_number":"u","status":"read"{f}}}"#)
        };
        assert!(matches!(parse("{"), Err(ReportError::NotJson(_))));
        assert!(matches!(parse(&ok("} 1")), Err(ReportError::NotJson(_))));
        assert_eq!(parse("[1]"), Err(ReportError::NotObject));
        assert_eq!(parse(r#""m""#), Err(ReportError::NotObject));
        assert_eq!(parse("null"), Err(ReportError::NotObject));
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
