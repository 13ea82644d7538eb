-- Sponsor policies (SPEC §4), checked by `meta/execute` before a call is queued. Fee bumps and
-- cancellations of already-accepted transactions never consult them.
--
-- All values are wei, NULL meaning "no limit":
--   max_fee_per_gas       the market max fee per gas above which new calls are refused
--   daily_budget          the sponsor's spend per UTC day (mined gas + in-flight reservations)
--   per_key_daily_budget  the same, per API key using this sponsor
-- Rows are written from the `[[sponsors.policies]]` config section at start-up (the file is the
-- source of truth; see docs/history.md).
CREATE TABLE sponsor_policies (
    chain_id              BIGINT         NOT NULL,
    sponsor               BYTEA          NOT NULL CHECK (length(sponsor) = 20),
    max_fee_per_gas       NUMERIC(78, 0) CHECK (max_fee_per_gas >= 0),
    daily_budget          NUMERIC(78, 0) CHECK (daily_budget >= 0),
    per_key_daily_budget  NUMERIC(78, 0) CHECK (per_key_daily_budget >= 0),
    updated_at            TIMESTAMPTZ    NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, sponsor)
);
