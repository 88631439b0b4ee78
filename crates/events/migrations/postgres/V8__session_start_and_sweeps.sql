-- A session (a refresh-token family) ends WALLETD_SESSION_MAX_SECS after its sign-in however often it
-- rotates: every token of a family carries the family's start. Existing families start at their
-- oldest token.
ALTER TABLE refresh_tokens ADD COLUMN session_started_at TIMESTAMPTZ;
UPDATE refresh_tokens SET session_started_at =
    (SELECT MIN(f.created_at) FROM refresh_tokens f WHERE f.family_id = refresh_tokens.family_id);
-- The clean-up job deletes handled-event ids after their retention.
CREATE INDEX inbox_handled ON inbox (handled_at);
