//! argon2id PHC hashing with the crate's default (OWASP) parameters:
//! m = 19 MiB, t = 2, p = 1.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use password_hash::rand_core::OsRng;
use secrecy::{ExposeSecret, SecretString};

pub fn hash(password: &SecretString) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .expect("argon2 with default parameters accepts any password and a generated salt")
        .to_string()
}

/// Verifies once, with memory of its own; the service's verifier threads
/// keep a `Verifier` each instead. A PHC string that does not parse never
/// verifies.
pub fn verify(phc: &str, password: &[u8]) -> bool {
    Verifier::default().verify(phc, password)
}

/// Verifies with one block of argon2 memory kept for every verification on
/// its thread. Allocating 19 MiB per check makes the allocator keep several
/// such blocks per thread (measured: 120 MiB for one thread after ten
/// checks); reusing one keeps a verifier thread at 19 MiB.
#[derive(Default)]
pub struct Verifier {
    memory: Vec<argon2::Block>,
}

impl Verifier {
    pub fn verify(&mut self, phc: &str, password: &[u8]) -> bool {
        self.try_verify(phc, password).unwrap_or_else(|| {
            // A row written by hand, or damaged: nothing can match it.
            tracing::warn!(
                "a stored password hash is not a usable argon2 PHC string; the password is refused"
            );
            false
        })
    }

    fn try_verify(&mut self, phc: &str, password: &[u8]) -> Option<bool> {
        let parsed = PasswordHash::new(phc).ok()?;
        let expected = parsed.hash?;
        let algorithm = argon2::Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => argon2::Version::try_from(v).ok()?,
            None => argon2::Version::default(),
        };
        let params = argon2::Params::try_from(&parsed).ok()?;
        let mut salt = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
        self.memory
            .resize(params.block_count(), argon2::Block::default());
        let mut out = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password, salt, &mut out, &mut self.memory[..])
            .ok()?;
        // Output compares in constant time.
        Some(password_hash::Output::new(&out).ok()? == expected)
    }
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
    fn the_reusing_verifier_agrees_with_the_crate() {
        let phc = hash(&SecretString::from("s3cret"));
        let mut v = Verifier::default();
        for _ in 0..3 {
            assert!(v.verify(&phc, b"s3cret"));
            assert!(!v.verify(&phc, b"s3cret!"));
        }
        assert!(!v.verify("$argon2id$v=19$m=19456,t=2,p=1$bad", b"s3cret"));
        assert!(!v.verify("not a phc", b"s3cret"));
    }

    #[test]
    fn new_passwords_must_fit_a_header() {
        assert!(validate_new("a-good one!").is_ok());
        for bad in ["", " x", "x ", "tab\there", "é", &"x".repeat(1025)] {
            assert!(validate_new(bad).is_err(), "{bad:?}");
        }
    }
}
