//! Signing: `X-FailedTasks-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! keyed by the target's secret. Receivers recompute it over the raw body and may refuse
//! old timestamps (docs/monitoring.md has checks in Go and Python).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::target::Secret;

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "x-failedtasks-signature";

/// The header value for `body` sent at `unix_seconds`.
pub fn signature(secret: &Secret, unix_seconds: i64, body: &[u8]) -> String {
    format!(
        "t={unix_seconds},v1={}",
        hex(&mac(secret.expose(), unix_seconds, body))
    )
}

fn mac(key: &[u8], unix_seconds: i64, body: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    m.update(unix_seconds.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Check a header value as a receiver does: the HMAC matches (compared in constant time)
/// and `t` is at most `tolerance_s` seconds from `now_s`.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now_s: i64, tolerance_s: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    let Some(given) = unhex(v1) else { return false };
    (now_s - t).abs() <= tolerance_s && m.verify_slice(&given).is_ok()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// RFC 4231 test case 2 ("Jefe"), then the header round trip.
    #[test]
    fn hmac_sha256_and_the_header_round_trip() {
        let key = b"Jefe";
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
            panic!("key")
        };
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let secret = Secret::new("s3cret").unwrap();
        let h = signature(&secret, 1_700_000_000, b"{\"a\":1}");
        assert!(h.starts_with("t=1700000000,v1="), "{h}");
        assert!(verify(b"s3cret", &h, b"{\"a\":1}", 1_700_000_100, 300));
        assert!(!verify(b"s3cret", &h, b"{\"a\":2}", 1_700_000_100, 300));
        assert!(!verify(b"other", &h, b"{\"a\":1}", 1_700_000_100, 300));
        assert!(
            !verify(b"s3cret", &h, b"{\"a\":1}", 1_700_001_000, 300),
            "too old"
        );
    }
}
