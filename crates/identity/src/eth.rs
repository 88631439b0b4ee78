//! Ethereum addresses (EIP-55) and personal-message signatures (EIP-191) on secp256k1.

use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use sha3::{Digest, Keccak256};

/// A 20-byte account address.
pub type Address = [u8; 20];

/// Parses `0x` + 40 hex digits. All-lower or all-upper case is accepted as is; mixed case must
/// be a valid EIP-55 checksum.
pub fn parse_address(s: &str) -> Result<Address, &'static str> {
    let hex_part = s.strip_prefix("0x").ok_or("must start with 0x")?;
    if hex_part.len() != 40 {
        return Err("must be 0x followed by 40 hex digits");
    }
    let mut out = [0u8; 20];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| "must be 0x followed by 40 hex digits")?;
    let has_lower = hex_part.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = hex_part.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper && to_checksum(&out) != s {
        return Err("has an invalid EIP-55 checksum");
    }
    Ok(out)
}

/// The EIP-55 mixed-case form.
pub fn to_checksum(address: &Address) -> String {
    let lower = hex::encode(address);
    let hash = Keccak256::digest(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
        out.push(if nibble >= 8 { c.to_ascii_uppercase() } else { c });
    }
    out
}

/// The address of a public key: the last 20 bytes of keccak256 of the uncompressed point.
pub fn address_of(key: &VerifyingKey) -> Address {
    let point = key.to_encoded_point(false);
    let hash = Keccak256::digest(&point.as_bytes()[1..]);
    let mut out = [0u8; 20];
    out.copy_from_slice(&hash[12..]);
    out
}

/// keccak256("\x19Ethereum Signed Message:\n" + len + message).
pub fn eip191_hash(message: &[u8]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(format!("\x19Ethereum Signed Message:\n{}", message.len()).as_bytes());
    h.update(message);
    h.finalize().into()
}

/// Parses a `0x`-prefixed 65-byte signature (r, s, v).
pub fn parse_signature(s: &str) -> Result<[u8; 65], &'static str> {
    let hex_part = s.strip_prefix("0x").unwrap_or(s);
    let mut out = [0u8; 65];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| "must be 65 bytes of hex (r, s, v)")?;
    Ok(out)
}

/// Recovers the signer of an EIP-191 personal-message signature over exactly `message`.
pub fn recover_signer(message: &[u8], sig: &[u8; 65]) -> Option<Address> {
    let signature = Signature::from_slice(&sig[..64]).ok()?;
    let v = match sig[64] {
        27 | 28 => sig[64] - 27,
        0 | 1 => sig[64],
        _ => return None,
    };
    let recid = RecoveryId::from_byte(v)?;
    let key = VerifyingKey::recover_from_prehash(&eip191_hash(message), &signature, recid).ok()?;
    Some(address_of(&key))
}

/// A private key held in memory: for the CLI's `sign` and the test harness, never for the server.
pub struct LocalWallet {
    key: SigningKey,
}

impl LocalWallet {
    /// A fresh key from the system's random source.
    pub fn random() -> anyhow::Result<Self> {
        loop {
            let mut bytes = [0u8; 32];
            aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness"))?;
            if let Ok(key) = SigningKey::from_slice(&bytes) {
                return Ok(Self { key });
            }
        }
    }

    /// From 32 bytes of hex, with or without `0x`.
    pub fn from_hex(s: &str) -> anyhow::Result<Self> {
        let bytes = hex::decode(s.trim().trim_start_matches("0x"))?;
        Ok(Self { key: SigningKey::from_slice(&bytes)? })
    }

    /// The private key as hex, for writing to a key file.
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    pub fn address(&self) -> Address {
        address_of(self.key.verifying_key())
    }

    /// An EIP-191 personal-message signature, `0x` + r + s + v (v = 27 or 28).
    pub fn sign_message(&self, message: &str) -> anyhow::Result<String> {
        let hash = eip191_hash(message.as_bytes());
        let (sig, recid): (Signature, RecoveryId) = self.key.sign_prehash_recoverable(&hash)?;
        let mut out = sig.to_bytes().to_vec();
        out.push(27 + recid.to_byte());
        Ok(format!("0x{}", hex::encode(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_eip55_vectors() {
        for a in ["0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"] {
            let parsed = parse_address(a);
            assert!(parsed.is_ok(), "{a}");
            assert_eq!(parsed.map(|p| to_checksum(&p)).ok().as_deref(), Some(a));
        }
        assert!(parse_address("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").is_ok());
        assert!(parse_address("0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
        assert!(parse_address("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").is_err());
    }

    #[test]
    fn signatures_recover_to_the_signer() -> anyhow::Result<()> {
        let w = LocalWallet::random()?;
        let sig = parse_signature(&w.sign_message("hello")?).map_err(anyhow::Error::msg)?;
        assert_eq!(recover_signer(b"hello", &sig), Some(w.address()));
        assert_ne!(recover_signer(b"hello!", &sig), Some(w.address()));
        Ok(())
    }
}
