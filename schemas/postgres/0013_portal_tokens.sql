-- Portal tokens (issue 27): the customer's dashboard, /dashboard?token=TOKEN.
--
-- A portal token is signed, not stored (services/opsmantik/portal.py: its id, site and expiry
-- under an HMAC key derived from OPSMANTIK_KEY_SECRET); this row is what makes it revocable and
-- listable. The gateway reads it by primary key on every dashboard request: a token whose row is
-- missing or revoked is refused from the next request on. Rows past their expiry are deleted
-- when a new token is minted (an expired token is refused by its signed expiry already).
CREATE TABLE portal_tokens (
    token_id     uuid PRIMARY KEY,
    site_id      uuid NOT NULL REFERENCES sites (site_id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    created_by   text NOT NULL CHECK (length(created_by) BETWEEN 1 AND 200),  -- cli or operator:<name>
    revoked_at   timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX portal_tokens_site ON portal_tokens (site_id);
CREATE INDEX portal_tokens_expiry ON portal_tokens (expires_at);
