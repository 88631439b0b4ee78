//! Deposit addresses (DESIGN D12): the non-hardened child of the chain's extended public key at the
//! user's index, as an Ethereum address. The service holds no private key for them: whoever holds
//! the matching extended private key (offline) can sweep them.

use alloy::primitives::Address;
use bip32::{ChildNumber, XPub};

/// The highest index a non-hardened child can have.
pub const MAX_INDEX: u32 = (1 << 31) - 1;

/// The address at `index` under `xpub`.
pub fn derive(xpub: &XPub, index: u32) -> anyhow::Result<Address> {
    anyhow::ensure!(index <= MAX_INDEX, "deposit address index {index} is past the last non-hardened child");
    let child = xpub
        .derive_child(ChildNumber::new(index, false).map_err(|e| anyhow::anyhow!("child number {index}: {e}"))?)
        .map_err(|e| anyhow::anyhow!("deriving child {index}: {e}"))?;
    Ok(Address::from_public_key(child.public_key()))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use bip32::{Prefix, XPrv};

    use super::*;

    #[test]
    fn the_address_is_the_one_the_private_child_signs_for() {
        let seed = [7u8; 64];
        let xprv = XPrv::new(seed).unwrap();
        let xpub_text = xprv.public_key().to_string(Prefix::XPUB);
        let xpub = XPub::from_str(&xpub_text).unwrap();
        for index in [0u32, 1, 41, MAX_INDEX] {
            let private = xprv.derive_child(ChildNumber::new(index, false).unwrap()).unwrap();
            let signer = alloy::signers::local::PrivateKeySigner::from_slice(&private.to_bytes()).unwrap();
            assert_eq!(derive(&xpub, index).unwrap(), signer.address(), "index {index}");
        }
        assert_ne!(derive(&xpub, 0).unwrap(), derive(&xpub, 1).unwrap());
        assert!(derive(&xpub, MAX_INDEX + 1).is_err());
    }
}
