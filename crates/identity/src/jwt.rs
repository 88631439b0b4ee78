//! RS256 access tokens: the signing key (generated on first start), JWKS, issue and verify.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use base::Clock;
use web::Role;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub addr: String,
    pub roles: Vec<Role>,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
}

/// What is read of a token before its signature is checked, to refuse it cheaply.
#[derive(Deserialize)]
struct Unverified {
    iss: String,
    exp: i64,
}

/// Clock skew a token's `exp` is allowed.
const LEEWAY_SECS: i64 = 5;

/// Verified tokens kept at most: an entry is a SHA-256 digest and the claims (about 200 bytes), so
/// the cache stays within a few MB however many tokens are presented.
const VERIFIED_CAPACITY: usize = 16_384;

/// The server's signing key and its public half.
pub struct TokenKeys {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: serde_json::Value,
    issuer: String,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    /// Tokens whose signature this key has checked, by the SHA-256 of the whole token: a client
    /// sends the same token on every request until it expires, and the RSA check (about 22 µs)
    /// was most of a cached read's cost. A token that differs in any byte is another entry; expiry
    /// is checked against the clock on every hit, so a cached token ends when it would have.
    verified: Mutex<HashMap<[u8; 32], Claims>>,
    verified_capacity: usize,
}

impl TokenKeys {
    /// Loads the PKCS#8 PEM key at `path`, generating a 2048-bit one (mode 0600) if there is none.
    pub fn load_or_generate(path: &Path, issuer: &str, ttl: Duration, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let pem = if path.exists() {
            refuse_if_others_can_read(path)?;
            std::fs::read_to_string(path).with_context(|| format!("reading signing key {}", path.display()))?
        } else {
            let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
            let der = pair.as_der().map_err(|_| anyhow::anyhow!("encoding the RSA key"))?;
            let pem = to_pem("PRIVATE KEY", der.as_ref());
            write_private(path, &pem)?;
            tracing::info!(key.path = %path.display(), "generated a new JWT signing key");
            pem
        };
        Self::from_pem(&pem, issuer, ttl, clock).with_context(|| format!("loading signing key {}", path.display()))
    }

    /// From a PKCS#8 PEM RSA private key.
    /// `clock`: what `iat`, `exp` and "expired" are measured against.
    pub fn from_pem(pem: &str, issuer: &str, ttl: Duration, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let der = from_pem(pem).context("not a PEM file")?;
        let pair = KeyPair::from_pkcs8(&der).map_err(|e| anyhow::anyhow!("not a PKCS#8 RSA private key: {e}"))?;
        let public = pair.public_key();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &[n.as_slice(), e.as_slice()].concat());
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]);
        let jwk = serde_json::json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(&n), "e": URL_SAFE_NO_PAD.encode(&e),
        });
        Ok(Self {
            kid,
            encoding: EncodingKey::from_rsa_pem(pem.as_bytes())?,
            decoding: DecodingKey::from_rsa_raw_components(&n, &e),
            jwk,
            issuer: issuer.to_string(),
            ttl,
            clock,
            verified: Mutex::new(HashMap::new()),
            verified_capacity: VERIFIED_CAPACITY,
        })
    }

    #[cfg(test)]
    fn with_verified_capacity(mut self, n: usize) -> Self {
        self.verified_capacity = n;
        self
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// `{"keys": [...]}` for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk] })
    }

    /// Signs an access token for the given user and roles, valid for `ttl`.
    pub fn issue(&self, user_id: Uuid, address: &str, roles: &[Role], ttl: Duration) -> anyhow::Result<String> {
        let now = self.clock.now().unix_timestamp();
        let claims = Claims {
            sub: user_id,
            addr: address.to_string(),
            roles: roles.to_vec(),
            iss: self.issuer.clone(),
            iat: now,
            exp: now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
            jti: Uuid::now_v7(),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }

    /// Verifies a token: RS256 only, our `kid` only, our issuer, not expired. A token verified
    /// before is answered from memory (only its expiry is checked again).
    pub fn verify(&self, token: &str) -> Result<Claims, &'static str> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let key: [u8; 32] = digest.as_ref().try_into().map_err(|_| "invalid token")?;
        let now = self.clock.now().unix_timestamp();
        let hit = self.verified_lock().get(&key).cloned();
        if let Some(claims) = hit {
            if claims.exp + LEEWAY_SECS < now {
                self.verified_lock().remove(&key);
                return Err("token expired");
            }
            return Ok(claims);
        }
        let claims = self.verify_signed(token)?;
        let mut verified = self.verified_lock();
        if verified.len() >= self.verified_capacity {
            // Full: drop what expired; if that frees too little, start over (the next request of
            // each client pays one RSA check again).
            verified.retain(|_, c| c.exp + LEEWAY_SECS >= now);
            if verified.len() >= self.verified_capacity / 2 {
                verified.clear();
            }
        }
        verified.insert(key, claims.clone());
        Ok(claims)
    }

    fn verified_lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Claims>> {
        // A panic while holding the lock cannot leave a half-written entry: take the map as it is.
        self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cfg(test)]
    fn verified_len(&self) -> usize {
        self.verified_lock().len()
    }

    /// The full check: header, cheap refusals, then the RSA signature.
    fn verify_signed(&self, token: &str) -> Result<Claims, &'static str> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
        if header.alg != Algorithm::RS256 {
            return Err("unsupported token algorithm");
        }
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err("unknown signing key");
        }
        // Cheap refusals before the RSA verification: another issuer, or expired.
        let unverified = token
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|p| serde_json::from_slice::<Unverified>(&p).ok())
            .ok_or("malformed token")?;
        if unverified.iss != self.issuer {
            return Err("invalid token");
        }
        if unverified.exp + LEEWAY_SECS < self.clock.now().unix_timestamp() {
            return Err("token expired");
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // Expiry is checked below against the injected clock, with the same 5 s of leeway.
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|_| "invalid token")?;
        if claims.exp + LEEWAY_SECS < self.clock.now().unix_timestamp() {
            return Err("token expired");
        }
        Ok(claims)
    }
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn from_pem(pem: &str) -> anyhow::Result<Vec<u8>> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    Ok(STANDARD.decode(body)?)
}

/// A signing key that other users of the machine can read is no secret: refuse it, naming the fix.
fn refuse_if_others_can_read(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.permissions().mode();
    if mode & 0o007 != 0 {
        anyhow::bail!(
            "signing key {} is readable by other users (mode {:o}); run `chmod 600 {}` (on Kubernetes, mount the secret with defaultMode 0400)",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

/// Writes a secret (a signing key, a wallet key) to a new file only its owner can read; an existing
/// file is never overwritten.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        storage::sqlite::create_private_dir(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base::clock::ManualClock;

    fn keys(clock: Arc<ManualClock>) -> TokenKeys {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("RSA key");
        let pem = to_pem("PRIVATE KEY", pair.as_der().expect("DER").as_ref());
        TokenKeys::from_pem(&pem, "walletd-test", Duration::from_secs(60), clock).expect("keys")
    }

    fn token(keys: &TokenKeys) -> String {
        keys.issue(Uuid::now_v7(), "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", &[Role::User], Duration::from_secs(60))
            .expect("token")
    }

    #[test]
    fn a_verified_token_is_remembered_and_still_expires_on_time() {
        let clock = ManualClock::new();
        let keys = keys(clock.clone());
        let t = token(&keys);
        let first = keys.verify(&t).expect("valid");
        assert_eq!(keys.verified_len(), 1);
        let again = keys.verify(&t).expect("still valid");
        assert_eq!((again.sub, again.jti), (first.sub, first.jti));
        assert_eq!(keys.verified_len(), 1, "the second verification is the remembered one");
        clock.advance(time::Duration::seconds(60 + LEEWAY_SECS));
        assert!(keys.verify(&t).is_ok(), "valid through the leeway");
        clock.advance(time::Duration::seconds(1));
        assert_eq!(keys.verify(&t).err(), Some("token expired"));
        assert_eq!(keys.verified_len(), 0, "an expired token leaves the cache");
    }

    #[test]
    fn a_token_changed_in_any_byte_is_checked_in_full() {
        let clock = ManualClock::new();
        let keys = keys(clock);
        let t = token(&keys);
        keys.verify(&t).expect("valid");
        let (head_payload, signature) = t.rsplit_once('.').expect("three parts");
        // Another signature on the same header and payload.
        let mut forged_sig = signature.as_bytes().to_vec();
        forged_sig[10] = if forged_sig[10] == b'A' { b'B' } else { b'A' };
        let forged_sig = String::from_utf8(forged_sig).expect("base64 is ASCII");
        assert_eq!(keys.verify(&format!("{head_payload}.{forged_sig}")).err(), Some("invalid token"));
        // Another payload with the remembered signature: roles raised to admin.
        let (header, payload) = head_payload.split_once('.').expect("three parts");
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json");
        claims["roles"] = serde_json::json!(["user", "admin"]);
        let raised = URL_SAFE_NO_PAD.encode(claims.to_string());
        assert_eq!(keys.verify(&format!("{header}.{raised}.{signature}")).err(), Some("invalid token"));
        assert_eq!(keys.verified_len(), 1, "nothing forged is remembered");
        // Another server's key: refused although this token was verified here (by the other key).
        let other = super::tests::keys(ManualClock::new());
        assert_eq!(other.verify(&t).err(), Some("unknown signing key"));
    }

    #[test]
    fn the_cache_is_bounded_and_a_full_one_still_verifies() {
        let clock = ManualClock::new();
        let keys = keys(clock).with_verified_capacity(4);
        let tokens: Vec<String> = (0..10).map(|_| token(&keys)).collect();
        for t in &tokens {
            keys.verify(t).expect("valid");
            assert!(keys.verified_len() <= 4, "{} entries", keys.verified_len());
        }
        for t in &tokens {
            assert!(keys.verify(t).is_ok(), "a token dropped from the cache verifies again");
        }
    }
}
