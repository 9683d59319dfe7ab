//! Signing secrets: made once per subscription, shown once, kept encrypted
//! with `forward.secret_key` (XChaCha20-Poly1305, the subscription's name
//! as associated data, so that a secret copied onto another row does not
//! decrypt), and used to sign deliveries as Standard Webhooks says.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::db::changes::Position;

const PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;

/// The key of `forward.secret_key`.
#[derive(Clone)]
pub struct Key(XChaCha20Poly1305);

/// A subscription's secret, decrypted, for signing.
pub struct Secret(Vec<u8>);

#[derive(Debug, thiserror::Error)]
#[error(
    "the signing secret of subscription `{0}` does not decrypt: forward.secret_key is not the key it was created with"
)]
pub struct WrongKey(pub String);

impl Key {
    /// `forward.secret_key`, which the configuration checked to be base64 of
    /// 32 bytes.
    pub fn from_config(key: &SecretString) -> Option<Key> {
        let bytes = STANDARD.decode(key.expose_secret()).ok()?;
        XChaCha20Poly1305::new_from_slice(&bytes).ok().map(Key)
    }

    /// A new secret: its printable form (`whsec_` + base64), shown once, and
    /// its encryption for the row of subscription `name`.
    pub fn generate(&self, name: &str) -> (SecretString, Vec<u8>) {
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::getrandom(&mut secret).expect("the OS random source works");
        let printable = format!("{PREFIX}{}", STANDARD.encode(secret));
        (printable.into(), self.encrypt(name, &secret))
    }

    fn encrypt(&self, name: &str, secret: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::getrandom(&mut nonce).expect("the OS random source works");
        let sealed = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: name.as_bytes(),
                },
            )
            .expect("encrypting a short secret cannot fail");
        [nonce.as_slice(), &sealed].concat()
    }

    pub fn decrypt(&self, name: &str, stored: &[u8]) -> Result<Secret, WrongKey> {
        let wrong = || WrongKey(name.to_owned());
        if stored.len() < NONCE_BYTES {
            return Err(wrong());
        }
        let (nonce, sealed) = stored.split_at(NONCE_BYTES);
        self.0
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: name.as_bytes(),
                },
            )
            .map(Secret)
            .map_err(|_| wrong())
    }
}

impl Secret {
    /// From its printable form (`whsec_...`), as a receiver holds it.
    pub fn parse(printable: &str) -> Option<Secret> {
        let encoded = printable.strip_prefix(PREFIX)?;
        STANDARD.decode(encoded).ok().map(Secret)
    }

    /// `webhook-signature`: `v1,` + base64 of HMAC-SHA256 over
    /// `id.timestamp.body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl Secret {
    /// The webhook-id of the delivery of the changes after `after` up to
    /// `last`, in `generation` (replays start a new one): `msg_` + 32 hex
    /// digits, the same whoever makes it and whenever, and unguessable.
    pub fn batch_id(&self, generation: i64, after: Position, last: Position) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(format!("koostatus batch {generation} {after} {last}").as_bytes());
        hex(&mac.finalize().into_bytes()[..16])
    }
}

fn hex(bytes: &[u8]) -> String {
    let digits: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{digits}")
}

/// A new webhook-id: `msg_` + 32 hex digits.
pub fn delivery_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("the OS random source works");
    hex(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_config(&STANDARD.encode([7u8; 32]).into()).unwrap()
    }

    #[test]
    fn secret_round_trips_only_under_its_name_and_key() {
        let (printable, stored) = key().generate("crm");
        let shown = Secret::parse(printable.expose_secret()).unwrap();
        let kept = key().decrypt("crm", &stored).unwrap();
        assert_eq!(shown.0, kept.0);
        assert_eq!(kept.0.len(), SECRET_BYTES);
        assert!(key().decrypt("other", &stored).is_err());
        let other = Key::from_config(&STANDARD.encode([8u8; 32]).into()).unwrap();
        assert!(other.decrypt("crm", &stored).is_err());
        assert!(!stored.windows(SECRET_BYTES).any(|w| w == kept.0));
    }

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signature_matches_the_specification() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
