//! Password hashing and verification, client-side, so that clear-text passwords never appear
//! in a statement and an unchanged password is recognised without writing it again.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Digest as _;
use sha2::Sha256;

use super::plan::PasswordState;

type HmacSha256 = Hmac<Sha256>;

/// A PostgreSQL SCRAM-SHA-256 verifier for `password` with a fresh random salt, as
/// `ALTER ROLE … PASSWORD '<verifier>'` expects it.
pub fn pg_scram_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// SASLprep as PostgreSQL applies it: on a password that is not valid for SASLprep, the raw
/// bytes are used.
fn saslprep(password: &str) -> Vec<u8> {
    match stringprep::saslprep(password) {
        Ok(p) => p.into_owned().into_bytes(),
        Err(_) => password.as_bytes().to_vec(),
    }
}

/// PBKDF2-HMAC-SHA256 with one output block: SCRAM's `Hi()`.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> Option<[u8; 32]> {
    let keyed = HmacSha256::new_from_slice(password).ok()?;
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        for (o, b) in out.iter_mut().zip(u.iter()) {
            *o ^= b;
        }
    }
    Some(out)
}

/// Compares two byte strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `candidate` against a stored `pg_authid.rolpassword`:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, recomputed with the stored
/// salt and iteration count. An MD5 hash, a missing password or anything unparsable is
/// [`PasswordState::Differs`] (setting it again stores a SCRAM verifier).
pub fn pg_verify(stored: Option<&str>, candidate: &str) -> PasswordState {
    let verified = stored.and_then(|stored| {
        let rest = stored.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored_key, _server_key) = keys.split_once(':')?;
        let iterations: u32 = iterations.parse().ok().filter(|&i| i > 0)?;
        let salt = STANDARD.decode(salt).ok()?;
        let stored_key = STANDARD.decode(stored_key).ok()?;
        let salted = hi(&saslprep(candidate), &salt, iterations)?;
        let mut mac = HmacSha256::new_from_slice(&salted).ok()?;
        mac.update(b"Client Key");
        let client_key = mac.finalize().into_bytes();
        let computed = <Sha256 as sha2::Digest>::digest(client_key);
        Some(constant_time_eq(&computed, &stored_key))
    });
    match verified {
        Some(true) => PasswordState::Matches,
        _ => PasswordState::Differs,
    }
}

/// MySQL's `mysql_native_password` hash: `*` and the upper-case hex of SHA1(SHA1(password)).
pub fn mysql_native_hash(password: &str) -> String {
    let inner = sha1::Sha1::digest(password.as_bytes());
    let outer = sha1::Sha1::digest(inner);
    let mut out = String::with_capacity(41);
    out.push('*');
    for b in outer {
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// Checks `candidate` against what MySQL stores for an account: only the
/// `mysql_native_password` plugin is checkable; anything else is
/// [`PasswordState::Differs`] (setting the password again switches the account to it).
pub fn mysql_verify(plugin: &str, stored: &str, candidate: &str) -> PasswordState {
    if plugin == "mysql_native_password"
        && constant_time_eq(
            stored.to_ascii_uppercase().as_bytes(),
            mysql_native_hash(candidate).as_bytes(),
        )
    {
        PasswordState::Matches
    } else {
        PasswordState::Differs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_round_trip() {
        let verifier = pg_scram_verifier("pässword with spaces");
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"));
        assert_eq!(
            pg_verify(Some(&verifier), "pässword with spaces"),
            PasswordState::Matches
        );
        assert_eq!(pg_verify(Some(&verifier), "other"), PasswordState::Differs);
        assert_eq!(pg_verify(None, "x"), PasswordState::Differs);
        assert_eq!(
            pg_verify(Some("md5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), "x"),
            PasswordState::Differs
        );
    }

    #[test]
    fn scram_known_vector() {
        // postgres-protocol's test vector: password "secret", salt 1..=16, 4096 iterations.
        let stored = "SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=";
        assert_eq!(pg_verify(Some(stored), "secret"), PasswordState::Matches);
        assert_eq!(pg_verify(Some(stored), "Secret"), PasswordState::Differs);
    }

    #[test]
    fn mysql_native() {
        // SELECT PASSWORD('password') on MariaDB.
        assert_eq!(
            mysql_native_hash("password"),
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
        assert_eq!(
            mysql_verify(
                "mysql_native_password",
                "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19",
                "password"
            ),
            PasswordState::Matches
        );
        assert_eq!(
            mysql_verify("ed25519", "whatever", "password"),
            PasswordState::Differs
        );
    }
}
