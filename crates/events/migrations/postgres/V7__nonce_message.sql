-- The exact EIP-4361 text issued with each nonce: sign-in accepts only that text (not any message
-- whose fields check out). Nonces issued before this have none and can no longer be spent; they
-- expire within WALLETD_NONCE_TTL_SECS.
ALTER TABLE auth_nonces ADD COLUMN message TEXT;
