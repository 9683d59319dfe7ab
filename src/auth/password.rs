//! argon2id PHC hashing with the crate's default (OWASP) parameters:
//! m = 19 MiB, t = 2, p = 1.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use password_hash::rand_core::OsRng;
use secrecy::{ExposeSecret, SecretString};

pub fn hash(password: &SecretString) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .expect("argon2 with default parameters accepts any password and a generated salt")
        .to_string()
}

/// Constant-time comparison of the derived key is done by the crate. A PHC
/// string that does not parse never verifies.
pub fn verify(phc: &str, password: &[u8]) -> bool {
    PasswordHash::new(phc)
        .is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok())
}

/// Checks a password read from an operator before it is hashed: KooMessage
/// sends it as an HTTP header value, so it must be one.
pub fn validate_new(password: &str) -> Result<(), String> {
    if password.is_empty() {
        return Err("The password read from standard input is empty.".into());
    }
    if password.len() > 1024 {
        return Err("The password is longer than 1024 bytes.".into());
    }
    if !password.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        return Err(
            "The password may contain only printable ASCII characters, as it travels in an HTTP header."
                .into(),
        );
    }
    if password.starts_with(' ') || password.ends_with(' ') {
        return Err("The password must not start or end with a space; HTTP strips them.".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_phc_and_verifies() {
        let phc = hash(&SecretString::from("s3cret"));
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("s3cret"));
        assert!(verify(&phc, b"s3cret"));
        assert!(!verify(&phc, b"s3cret "));
        assert!(!verify("not a phc", b"s3cret"));
    }

    #[test]
    fn new_passwords_must_fit_a_header() {
        assert!(validate_new("a-good one!").is_ok());
        for bad in ["", " x", "x ", "tab\there", "é", &"x".repeat(1025)] {
            assert!(validate_new(bad).is_err(), "{bad:?}");
        }
    }
}
