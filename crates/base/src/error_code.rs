//! The stable error codes of problem+json bodies (API.md): one enum, so a code is spelt once and
//! its HTTP status travels with it.

macro_rules! error_codes {
    ($($variant:ident = $status:literal, $text:literal;)*) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, for documentation and tests.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as clients see it: `ORDER_ALREADY_CLAIMED`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                }
            }

            /// The HTTP status that goes with the code.
            pub fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }
        }
    };
}

error_codes! {
    BadRequest = 400, "BAD_REQUEST";
    MalformedJson = 400, "MALFORMED_JSON";
    Unauthenticated = 401, "UNAUTHENTICATED";
    InvalidToken = 401, "INVALID_TOKEN";
    InvalidRefreshToken = 401, "INVALID_REFRESH_TOKEN";
    RefreshTokenReused = 401, "REFRESH_TOKEN_REUSED";
    NonceInvalid = 401, "NONCE_INVALID";
    InvalidSignature = 401, "INVALID_SIGNATURE";
    SiweMessageExpired = 401, "SIWE_MESSAGE_EXPIRED";
    SiweMessageNotYetValid = 401, "SIWE_MESSAGE_NOT_YET_VALID";
    SiweDomainMismatch = 401, "SIWE_DOMAIN_MISMATCH";
    SiweChainMismatch = 401, "SIWE_CHAIN_MISMATCH";
    Forbidden = 403, "FORBIDDEN";
    NotFound = 404, "NOT_FOUND";
    RequestTimeout = 408, "REQUEST_TIMEOUT";
    SupplyReserved = 409, "SUPPLY_RESERVED";
    InvalidStatusTransition = 409, "INVALID_STATUS_TRANSITION";
    OrderNotPending = 409, "ORDER_NOT_PENDING";
    OrderNotDeletable = 409, "ORDER_NOT_DELETABLE";
    OrderAlreadyClaimed = 409, "ORDER_ALREADY_CLAIMED";
    OrderChanged = 409, "ORDER_CHANGED";
    DepositReferenceConflict = 409, "DEPOSIT_REFERENCE_CONFLICT";
    ClaimNotPending = 409, "CLAIM_NOT_PENDING";
    IdempotencyKeyInUse = 409, "IDEMPOTENCY_KEY_IN_USE";
    RedrivePending = 409, "REDRIVE_PENDING";
    VersionMismatch = 412, "VERSION_MISMATCH";
    PayloadTooLarge = 413, "PAYLOAD_TOO_LARGE";
    UnsupportedMediaType = 415, "UNSUPPORTED_MEDIA_TYPE";
    ValidationFailed = 422, "VALIDATION_FAILED";
    UnknownAsset = 422, "UNKNOWN_ASSET";
    AmountBelowReserved = 422, "AMOUNT_BELOW_RESERVED";
    CannotClaimOwnOrder = 422, "CANNOT_CLAIM_OWN_ORDER";
    InsufficientSupply = 422, "INSUFFICIENT_SUPPLY";
    InsufficientFunds = 422, "INSUFFICIENT_FUNDS";
    OrderNotClaimable = 422, "ORDER_NOT_CLAIMABLE";
    IdempotencyKeyReused = 422, "IDEMPOTENCY_KEY_REUSED";
    RateLimited = 429, "RATE_LIMITED";
    Internal = 500, "INTERNAL";
    Unavailable = 503, "UNAVAILABLE";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_upper_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{s}");
            assert!((400..600).contains(&code.status()), "{s}");
        }
    }
}
