//! Exact amounts of registered assets (DESIGN D3): decimals per asset, never floats.

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;

/// The assets the platform accepts, with their number of decimals. Configuration, not code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetRegistry(BTreeMap<String, u32>);

/// One registered asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    pub code: String,
    pub decimals: u32,
}

/// The default registry: `BTC:8,ETH:18,USDC:6,USDT:6,SOL:9`.
pub const DEFAULT_ASSETS: &str = "BTC:8,ETH:18,USDC:6,USDT:6,SOL:9";

impl AssetRegistry {
    /// Parses `CODE:DECIMALS,...`. Codes are 2 to 12 upper-case letters or digits; decimals 0 to 18.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (code, decimals) = part.split_once(':').ok_or_else(|| format!("`{part}` is not CODE:DECIMALS"))?;
            let code = code.trim().to_ascii_uppercase();
            if !(2..=12).contains(&code.len()) || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("`{code}` is not an asset code (2-12 letters or digits)"));
            }
            let decimals: u32 = decimals
                .trim()
                .parse()
                .ok()
                .filter(|d| *d <= 18)
                .ok_or_else(|| format!("decimals of `{code}` must be an integer from 0 to 18"))?;
            if map.insert(code.clone(), decimals).is_some() {
                return Err(format!("`{code}` is listed twice"));
            }
        }
        if map.is_empty() {
            return Err("no assets configured".into());
        }
        Ok(Self(map))
    }

    /// Looks an asset up by code, case-insensitively.
    pub fn get(&self, code: &str) -> Option<Asset> {
        let code = code.to_ascii_uppercase();
        self.0.get(&code).map(|d| Asset { code, decimals: *d })
    }

    /// The codes, for messages.
    pub fn codes(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    /// The spec string this registry was parsed from, normalised.
    pub fn spec(&self) -> String {
        self.0.iter().map(|(c, d)| format!("{c}:{d}")).collect::<Vec<_>>().join(",")
    }
}

impl Default for AssetRegistry {
    fn default() -> Self {
        #[expect(clippy::expect_used, reason = "the default spec is a constant covered by a test")]
        Self::parse(DEFAULT_ASSETS).expect("default assets parse")
    }
}

/// Why an amount string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("must be a decimal string such as \"12.5\"")]
    NotADecimal,
    #[error("must not be negative")]
    Negative,
    #[error("must be greater than zero")]
    Zero,
    #[error("has more than {0} decimals")]
    TooManyDecimals(u32),
    #[error("is too large")]
    TooLarge,
}

/// Parses a non-negative decimal string with at most `asset.decimals` decimals.
/// Only plain notation is accepted: digits, an optional point and digits.
pub fn parse_amount(s: &str, asset: &Asset) -> Result<Decimal, AmountError> {
    let digits = match s.strip_prefix('-') {
        Some(rest) if is_plain_decimal(rest) => return Err(AmountError::Negative),
        Some(_) => return Err(AmountError::NotADecimal),
        None => s,
    };
    if !is_plain_decimal(digits) {
        return Err(AmountError::NotADecimal);
    }
    let frac = digits.split_once('.').map_or("", |(_, f)| f);
    if frac.trim_end_matches('0').len() > asset.decimals as usize {
        return Err(AmountError::TooManyDecimals(asset.decimals));
    }
    let value = Decimal::from_str(digits).map_err(|_| AmountError::TooLarge)?;
    // 28 significant digits is what Decimal holds exactly; keep room for the asset's scale.
    let max_int_digits = 28 - asset.decimals as usize;
    let int_part = digits.split('.').next().unwrap_or("").trim_start_matches('0');
    if int_part.len() > max_int_digits {
        return Err(AmountError::TooLarge);
    }
    Ok(value.normalize())
}

/// The largest amount of an asset walletd holds: fewer than `28 - decimals` integer digits, so every
/// amount (and every sum or product of them that stays below it) is exact in a 96-bit decimal.
pub fn max_amount(asset: &Asset) -> Decimal {
    let int_digits = 28u32.saturating_sub(asset.decimals);
    Decimal::from_i128_with_scale(10i128.pow(int_digits), 0) - Decimal::new(1, asset.decimals)
}

/// Whether `value` is at most [`max_amount`]: a computed amount above it may have been rounded.
pub fn within_max(value: Decimal, asset: &Asset) -> bool {
    value <= max_amount(asset)
}

/// Like [`parse_amount`] but zero is refused too.
pub fn parse_positive_amount(s: &str, asset: &Asset) -> Result<Decimal, AmountError> {
    let v = parse_amount(s, asset)?;
    if v.is_zero() { Err(AmountError::Zero) } else { Ok(v) }
}

fn is_plain_decimal(s: &str) -> bool {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// Formats an amount with exactly the asset's decimals: `"0.125000000000000000"`.
pub fn format_amount(value: Decimal, decimals: u32) -> String {
    let mut v = value;
    v.rescale(decimals);
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth() -> Asset {
        Asset { code: "ETH".into(), decimals: 18 }
    }

    #[test]
    fn default_registry_parses() {
        let r = AssetRegistry::default();
        assert_eq!(r.get("eth").map(|a| a.decimals), Some(18));
        assert_eq!(r.get("BTC").map(|a| a.decimals), Some(8));
        assert!(r.get("DOGE").is_none());
    }

    #[test]
    fn registry_rejects_bad_specs() {
        for bad in ["", "ETH", "ETH:x", "ETH:19", "E:2", "ETH:1,ETH:2"] {
            assert!(AssetRegistry::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amounts_parse_exactly() {
        assert_eq!(
            parse_amount("0.000000000000000001", &eth()).map(|d| d.to_string()),
            Ok("0.000000000000000001".into())
        );
        assert_eq!(parse_amount("12.50", &eth()).map(|d| d.to_string()), Ok("12.5".into()));
        assert_eq!(format_amount(Decimal::new(125, 3), 18), "0.125000000000000000");
    }

    #[test]
    fn the_maximum_keeps_every_amount_exact() {
        let usdc = Asset { code: "USDC".into(), decimals: 6 };
        assert_eq!(max_amount(&usdc).to_string(), "9999999999999999999999.999999");
        assert_eq!(max_amount(&eth()).to_string(), "9999999999.999999999999999999");
        assert!(within_max(max_amount(&eth()), &eth()));
        // Nine of the largest ETH price need a mantissa above 2^96, so the product is rounded...
        let rounded = max_amount(&eth()).checked_mul(Decimal::from(9)).unwrap_or_default();
        assert_ne!(rounded.to_string(), "89999999999.999999999999999991");
        // ...and the bound refuses it, as it refuses an exact product above the maximum.
        assert!(!within_max(rounded, &eth()));
        assert!(!within_max(max_amount(&eth()) * Decimal::from(3), &eth()));
    }

    #[test]
    fn amounts_reject_bad_input() {
        let usdc = Asset { code: "USDC".into(), decimals: 6 };
        assert_eq!(parse_amount("-1", &usdc), Err(AmountError::Negative));
        assert_eq!(parse_amount("1.0000001", &usdc), Err(AmountError::TooManyDecimals(6)));
        assert_eq!(parse_amount("1.1000000", &usdc).map(|d| d.to_string()), Ok("1.1".into()));
        for bad in ["", "1e5", " 1", "1.", ".5", "+1", "0x10", "1,5", "NaN"] {
            assert_eq!(parse_amount(bad, &usdc), Err(AmountError::NotADecimal), "{bad}");
        }
        assert_eq!(parse_amount("99999999999999999999999", &usdc), Err(AmountError::TooLarge));
        assert_eq!(parse_positive_amount("0.000", &usdc), Err(AmountError::Zero));
    }
}
