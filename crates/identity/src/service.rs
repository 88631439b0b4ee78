//! The sign-in use cases: nonce, login, refresh, logout.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use base::{Clock, ErrorCode};
use web::{ApiError, FieldError, Principal, Role};

use crate::TokenKeys;
use crate::db::{IdentityStore, Rotation, UserRow};
use crate::eth;

/// `POST /v1/auth/nonce` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NonceResponse {
    pub nonce: String,
    /// The EIP-4361 message to sign with `personal_sign`.
    pub message: String,
}

/// A user as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub address: String,
    pub roles: Vec<Role>,
}

/// A token pair.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub user: UserView,
}

/// What sign-in checks messages against and how long its secrets live.
#[derive(Debug, Clone)]
pub struct SignInOptions {
    /// EIP-4361 domain, URI and chain id that sign-in messages must carry.
    pub domain: String,
    pub uri: String,
    pub chain_id: u64,
    pub nonce_ttl: Duration,
    /// A refresh token's lifetime; each rotation starts a new one.
    pub refresh_ttl: Duration,
    /// A session's lifetime from sign-in, however often its refresh token rotates.
    pub session_max: Duration,
    /// Checksummed addresses that sign in with the `admin` role.
    pub admins: Vec<String>,
}

/// Sign-in with Ethereum and token lifecycle.
pub struct AuthService {
    store: IdentityStore,
    keys: Arc<TokenKeys>,
    opts: SignInOptions,
    clock: Arc<dyn Clock>,
}

impl AuthService {
    pub fn new(store: IdentityStore, keys: Arc<TokenKeys>, opts: SignInOptions, clock: Arc<dyn Clock>) -> Self {
        Self { store, keys, opts, clock }
    }

    pub fn keys(&self) -> &Arc<TokenKeys> {
        &self.keys
    }

    pub fn store(&self) -> &IdentityStore {
        &self.store
    }

    /// Roles for an address: `user`, plus `admin` when configured.
    pub fn roles_for(&self, address: &str) -> Vec<Role> {
        let mut roles = vec![Role::User];
        if self.is_admin(address) {
            roles.push(Role::Admin);
        }
        roles
    }

    fn is_admin(&self, address: &str) -> bool {
        self.opts.admins.iter().any(|a| a == address)
    }

    /// The caller a valid access token stands for. `admin` is what the configuration says of the
    /// address now, not what the token says: an address taken off the admin list loses the role on
    /// its next request, and one added gains it without signing in again.
    pub fn principal(&self, token: &str) -> Result<Principal, &'static str> {
        let claims = self.keys.verify(token)?;
        let mut roles: Vec<Role> = claims.roles.into_iter().filter(|r| *r != Role::Admin).collect();
        if self.is_admin(&claims.addr) {
            roles.push(Role::Admin);
        }
        Ok(Principal { user_id: claims.sub, address: claims.addr, roles })
    }

    /// Issues a single-use nonce and the message that carries it.
    #[tracing::instrument(skip_all)]
    pub async fn nonce(&self, address: &str) -> Result<NonceResponse, ApiError> {
        let parsed =
            eth::parse_address(address).map_err(|m| ApiError::validation(vec![FieldError::new("address", m)]))?;
        let address = eth::to_checksum(&parsed);
        let nonce = random_token(12)?.chars().filter(char::is_ascii_alphanumeric).collect::<String>();
        let now = self.clock.now();
        let issued = now.replace_nanosecond(0).unwrap_or(now);
        let expires = issued + self.opts.nonce_ttl;
        let message = format!(
            "{domain} wants you to sign in with your Ethereum account:\n{address}\n\nSign in to walletd.\n\nURI: {uri}\nVersion: 1\nChain ID: {chain}\nNonce: {nonce}\nIssued At: {iat}\nExpiration Time: {exp}",
            domain = self.opts.domain,
            uri = self.opts.uri,
            chain = self.opts.chain_id,
            iat = rfc3339(issued),
            exp = rfc3339(expires),
        );
        self.store.create_nonce(&nonce, &address, &message, expires).await?;
        Ok(NonceResponse { nonce, message })
    }

    /// Verifies a signed EIP-4361 message and starts a session.
    #[tracing::instrument(skip_all)]
    pub async fn login(&self, message: &str, signature: &str) -> Result<TokenResponse, ApiError> {
        let msg: siwe::Message = message.parse().map_err(|e| {
            ApiError::validation(vec![FieldError::new("message", format!("is not an EIP-4361 message: {e}"))])
        })?;
        let sig =
            eth::parse_signature(signature).map_err(|m| ApiError::validation(vec![FieldError::new("signature", m)]))?;
        if msg.domain.as_str() != self.opts.domain || msg.uri.as_str() != self.opts.uri {
            return Err(ApiError::new(ErrorCode::SiweDomainMismatch, "the message is for another domain"));
        }
        if msg.chain_id != self.opts.chain_id {
            return Err(ApiError::new(ErrorCode::SiweChainMismatch, "the message is for another chain"));
        }
        let now = self.clock.now();
        if msg.expiration_time.as_ref().is_some_and(|t| *t.as_ref() <= now) {
            return Err(ApiError::new(ErrorCode::SiweMessageExpired, "the message has expired"));
        }
        if msg.not_before.as_ref().is_some_and(|t| *t.as_ref() > now) {
            return Err(ApiError::new(ErrorCode::SiweMessageNotYetValid, "the message is not valid yet"));
        }
        // The signature covers the exact text the wallet was shown, not a re-serialisation of it.
        if eth::recover_signer(message.as_bytes(), &sig) != Some(msg.address) {
            return Err(ApiError::new(
                ErrorCode::InvalidSignature,
                "the signature does not match the message's address",
            ));
        }
        let address = eth::to_checksum(&msg.address);
        // Only the exact text issued with the nonce: another statement, extra resources or a missing
        // expiration would otherwise pass as long as the fields checked out.
        if !self.store.consume_nonce(&msg.nonce, &address, message).await? {
            return Err(ApiError::new(
                ErrorCode::NonceInvalid,
                "the nonce is unknown, used or expired, or the message is not the one issued with it",
            ));
        }
        let user = self.store.upsert_user(&address).await?;
        tracing::info!(user.id = %user.id, "signed in");
        self.start_session(&user, Uuid::now_v7()).await
    }

    /// Rotates a refresh token; a reused token revokes its family.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, token: &str) -> Result<TokenResponse, ApiError> {
        let new_token = random_token(32)?;
        let expires = self.clock.now() + self.opts.refresh_ttl;
        let rotated = self
            .store
            .rotate_refresh(&hash_token(token), &hash_token(&new_token), expires, self.opts.session_max)
            .await?;
        match rotated {
            Rotation::Rotated { user_id } => {
                let user = self
                    .store
                    .get_user(user_id)
                    .await?
                    .ok_or_else(|| ApiError::new(ErrorCode::InvalidRefreshToken, "unknown user"))?;
                self.token_response(&user, new_token)
            }
            Rotation::Reused => {
                tracing::warn!("a spent refresh token was presented; its family is revoked");
                Err(ApiError::new(ErrorCode::RefreshTokenReused, "refresh token already used; sign in again"))
            }
            Rotation::Expired => {
                Err(ApiError::new(ErrorCode::InvalidRefreshToken, "refresh token or session expired; sign in again"))
            }
            Rotation::Unknown => Err(ApiError::new(ErrorCode::InvalidRefreshToken, "unknown refresh token")),
        }
    }

    pub async fn logout(&self, token: &str) -> Result<(), ApiError> {
        Ok(self.store.revoke_family(&hash_token(token)).await?)
    }

    async fn start_session(&self, user: &UserRow, family: Uuid) -> Result<TokenResponse, ApiError> {
        let refresh = random_token(32)?;
        self.store
            .insert_refresh(
                &hash_token(&refresh),
                family,
                user.id,
                self.clock.now() + self.opts.refresh_ttl.min(self.opts.session_max),
            )
            .await?;
        self.token_response(user, refresh)
    }

    fn token_response(&self, user: &UserRow, refresh_token: String) -> Result<TokenResponse, ApiError> {
        let roles = self.roles_for(&user.address);
        let access_token = self.keys.issue(user.id, &user.address, &roles, self.keys.ttl())?;
        Ok(TokenResponse {
            access_token,
            refresh_token,
            token_type: "Bearer",
            expires_in: self.keys.ttl().as_secs(),
            user: UserView { id: user.id, address: user.address.clone(), roles },
        })
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// `n` random bytes, base64url.
fn random_token(n: usize) -> Result<String, ApiError> {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ApiError::internal(anyhow::anyhow!("the system RNG failed")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Refresh tokens are stored as SHA-256 hex.
fn hash_token(token: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()))
}
