//! Channel identifiers: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelId(String);

impl ChannelId {
    pub fn parse(s: &str) -> Result<ChannelId, String> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if s.is_empty() || s.len() > 64 || !s.chars().all(valid_char) {
            return Err(format!(
                "channel id {s:?} is invalid: use 1 to 64 characters of A-Z a-z 0-9 . _ -"
            ));
        }
        Ok(ChannelId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ChannelId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        assert!(ChannelId::parse("202105102694809992").is_ok());
        assert!(ChannelId::parse("a.B_c-9").is_ok());
        assert!(ChannelId::parse(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_everything_else() {
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(ChannelId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
