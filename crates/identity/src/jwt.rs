//! RS256 access tokens: the signing key (generated on first start), JWKS, issue and verify.
//!
//! Rotation: besides the key it signs with, a server publishes and accepts further keys (their
//! public halves) that it never signs with: the next key before every process has it, the retired
//! one until the last token it signed has expired. Tokens name their key by `kid`.

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

/// A key tokens may be signed with: its id, what checks a signature, and its JWK.
struct PublicKey {
    kid: String,
    decoding: DecodingKey,
    jwk: serde_json::Value,
}

impl PublicKey {
    /// From an RSA public key's modulus and exponent (big-endian, no leading zeros); the `kid` is the
    /// first 12 bytes of their SHA-256, so the same key has the same id on every server.
    fn from_components(n: &[u8], e: &[u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &[n, e].concat());
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]);
        let jwk = serde_json::json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e),
        });
        Self { kid, decoding: DecodingKey::from_rsa_raw_components(n, e), jwk }
    }

    /// From a PEM file's text: a PKCS#8 private key (`PRIVATE KEY`) or an RSA public key
    /// (`PUBLIC KEY`, X.509 SubjectPublicKeyInfo, or `RSA PUBLIC KEY`, PKCS#1).
    fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let der = from_pem(pem).context("not a PEM file")?;
        if pem.contains("PRIVATE KEY-----") {
            let pair = KeyPair::from_pkcs8(&der).map_err(|e| anyhow::anyhow!("not a PKCS#8 RSA private key: {e}"))?;
            let public = pair.public_key();
            return Ok(Self::from_components(
                public.modulus().big_endian_without_leading_zero(),
                public.exponent().big_endian_without_leading_zero(),
            ));
        }
        let public = aws_lc_rs::rsa::PublicKey::from_der(&der)
            .map_err(|e| anyhow::anyhow!("neither a PKCS#8 RSA private key nor an RSA public key: {e}"))?;
        Ok(Self::from_components(
            public.modulus().big_endian_without_leading_zero(),
            public.exponent().big_endian_without_leading_zero(),
        ))
    }
}

/// The server's signing key and the keys it accepts tokens from.
pub struct TokenKeys {
    encoding: EncodingKey,
    /// The signing key's public half first, then the keys only published (rotation), no two alike.
    published: Vec<PublicKey>,
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
        if !pem.contains("-----BEGIN PRIVATE KEY-----") {
            anyhow::bail!("not a PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`)");
        }
        let signing = PublicKey::from_pem(pem)?;
        Ok(Self {
            encoding: EncodingKey::from_rsa_pem(pem.as_bytes())?,
            published: vec![signing],
            issuer: issuer.to_string(),
            ttl,
            clock,
            verified: Mutex::new(HashMap::new()),
            verified_capacity: VERIFIED_CAPACITY,
        })
    }

    /// Also publishes, and accepts tokens signed by, the keys in these PEM files (private keys or
    /// public halves; a private one must not be readable by other users). A key listed twice, or the
    /// signing key itself, counts once.
    pub fn with_published(mut self, paths: &[std::path::PathBuf]) -> anyhow::Result<Self> {
        for path in paths {
            let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            if pem.contains("PRIVATE KEY-----") {
                refuse_if_others_can_read(path)?;
            } else {
                refuse_if_others_can_write(path)?;
            }
            let key = PublicKey::from_pem(&pem).with_context(|| format!("loading {}", path.display()))?;
            if self.published.iter().all(|k| k.kid != key.kid) {
                tracing::info!(key.kid = %key.kid, key.path = %path.display(), "publishing a key tokens are not signed with");
                self.published.push(key);
            }
        }
        Ok(self)
    }

    /// The id of the key new tokens are signed with.
    pub fn signing_kid(&self) -> &str {
        &self.published[0].kid
    }

    /// The signing key's public half as PEM (`PUBLIC KEY`, SubjectPublicKeyInfo), for the other
    /// processes of a rotation.
    pub fn public_pem(pem: &str) -> anyhow::Result<String> {
        let der = from_pem(pem).context("not a PEM file")?;
        let pair = KeyPair::from_pkcs8(&der).map_err(|e| anyhow::anyhow!("not a PKCS#8 RSA private key: {e}"))?;
        let spki = pair.public_key().as_der().map_err(|_| anyhow::anyhow!("encoding the public key"))?;
        Ok(to_pem("PUBLIC KEY", spki.as_ref()))
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
        serde_json::json!({ "keys": self.published.iter().map(|k| &k.jwk).collect::<Vec<_>>() })
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
        header.kid = Some(self.signing_kid().to_string());
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }

    /// Verifies a token: RS256 only, signed by a key we publish, our issuer, not expired. A token verified
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
        let key = self
            .published
            .iter()
            .find(|k| header.kid.as_deref() == Some(k.kid.as_str()))
            .ok_or("unknown signing key")?;
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
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
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
/// Group read is allowed: Kubernetes mounts a Secret with `defaultMode: 0400` as 0440 when the pod
/// has an `fsGroup`, the group being the pod's own. A key file others can write is refused too.
pub fn refuse_if_others_can_read(path: &Path) -> anyhow::Result<()> {
    let mode = mode_of(path)?;
    refuse_writable(path, mode)?;
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

/// A key file (even a public one) that users other than its owner can change would let them add a
/// key tokens are then accepted from: refuse it.
pub fn refuse_if_others_can_write(path: &Path) -> anyhow::Result<()> {
    refuse_writable(path, mode_of(path)?)
}

fn mode_of(path: &Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.permissions().mode())
}

fn refuse_writable(path: &Path, mode: u32) -> anyhow::Result<()> {
    if mode & 0o022 != 0 {
        anyhow::bail!(
            "key file {} can be changed by users other than its owner (mode {:o}); run `chmod go-w {}`",
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
        TokenKeys::from_pem(&new_pem(), "walletd-test", Duration::from_secs(60), clock).expect("keys")
    }

    fn new_pem() -> String {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("RSA key");
        to_pem("PRIVATE KEY", pair.as_der().expect("DER").as_ref())
    }

    fn kid_of(token: &str) -> String {
        jsonwebtoken::decode_header(token).expect("header").kid.expect("kid")
    }

    /// A directory of its own under the system's temporary one, removed when dropped.
    struct Dir(std::path::PathBuf);
    impl Dir {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("jwt-test-{}", Uuid::now_v7()));
            std::fs::create_dir(&dir).expect("temp dir");
            Self(dir)
        }
        fn write(&self, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
            use std::os::unix::fs::PermissionsExt;
            let path = self.0.join(name);
            std::fs::write(&path, text).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            path
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The three steps of a rotation from key A to key B, as three servers would be configured.
    #[test]
    fn a_rotation_publishes_the_next_key_first_and_the_retired_one_until_its_tokens_expire() {
        let clock = ManualClock::new();
        let dir = Dir::new();
        let (a_pem, b_pem) = (new_pem(), new_pem());
        let a_public = dir.write("a.pub.pem", &TokenKeys::public_pem(&a_pem).expect("public"), 0o644);
        let b_public = dir.write("b.pub.pem", &TokenKeys::public_pem(&b_pem).expect("public"), 0o644);
        let load = |pem: &str, published: &[std::path::PathBuf]| {
            TokenKeys::from_pem(pem, "walletd-test", Duration::from_secs(60), clock.clone())
                .expect("keys")
                .with_published(published)
                .expect("published")
        };
        let only_a = load(&a_pem, &[]);
        let a_token = token(&only_a);

        // 1. Every process publishes B; A still signs.
        let step1 = load(&a_pem, std::slice::from_ref(&b_public));
        let b_kid = load(&b_pem, &[]).signing_kid().to_string();
        assert_eq!(kid_of(&token(&step1)), only_a.signing_kid(), "A signs until step 2");
        let kids: Vec<&str> = step1.published.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, [only_a.signing_kid(), b_kid.as_str()]);
        assert_eq!(step1.jwks()["keys"][1]["kid"], b_kid.as_str());

        // 2. B signs; A is published until the last token it signed has expired.
        let step2 = load(&b_pem, &[a_public.clone(), b_public]);
        assert_eq!(step2.published.len(), 2, "B listed again counts once");
        let b_token = token(&step2);
        assert_eq!(kid_of(&b_token), b_kid, "new tokens use the new key");
        assert!(step1.verify(&b_token).is_ok(), "a step-1 process accepts B's tokens");
        assert_eq!(step2.verify(&a_token).expect("A's token still works").iss, "walletd-test");
        clock.advance(time::Duration::seconds(60 + LEEWAY_SECS + 1));
        assert_eq!(load(&b_pem, &[a_public]).verify(&a_token).err(), Some("token expired"));

        // 3. A is gone: a token it signed is from an unknown key, whatever its expiry.
        let step3 = load(&b_pem, &[]);
        assert_eq!(step3.jwks()["keys"].as_array().map(Vec::len), Some(1));
        assert_eq!(step3.verify(&token(&only_a)).err(), Some("unknown signing key"));
    }

    #[test]
    fn published_keys_are_read_from_private_or_public_pem_and_a_readable_private_key_is_refused() {
        let dir = Dir::new();
        let pem = new_pem();
        let kid = keys_from(&pem).signing_kid().to_string();
        let private = dir.write("k.pem", &pem, 0o600);
        let public = dir.write("k.pub.pem", &TokenKeys::public_pem(&pem).expect("public"), 0o644);
        for path in [&private, &public] {
            let loaded = keys(ManualClock::new()).with_published(std::slice::from_ref(path)).expect("loads");
            assert_eq!(loaded.published[1].kid, kid, "{} names the same key", path.display());
        }
        let readable = dir.write("open.pem", &pem, 0o644);
        let err = keys(ManualClock::new()).with_published(&[readable]).err().expect("refused");
        assert!(format!("{err:#}").contains("readable by other users"), "{err:#}");
        let writable = dir.write("open.pub.pem", &TokenKeys::public_pem(&pem).expect("public"), 0o666);
        let err = keys(ManualClock::new()).with_published(&[writable]).err().expect("refused");
        assert!(format!("{err:#}").contains("can be changed by users other than its owner"), "{err:#}");
        let garbage = dir.write("garbage.pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", 0o644);
        let err = keys(ManualClock::new()).with_published(std::slice::from_ref(&garbage)).err().expect("refused");
        assert!(format!("{err:#}").contains("garbage.pem"), "the error names the file: {err:#}");
        assert!(
            TokenKeys::from_pem(
                &TokenKeys::public_pem(&pem).expect("public"),
                "x",
                Duration::from_secs(1),
                ManualClock::new()
            )
            .is_err(),
            "a public key cannot sign"
        );
    }

    fn keys_from(pem: &str) -> TokenKeys {
        TokenKeys::from_pem(pem, "walletd-test", Duration::from_secs(60), ManualClock::new()).expect("keys")
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
