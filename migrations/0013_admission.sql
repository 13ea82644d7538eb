-- Admission (issue 12): reputation, cool-down and budgets per signer and per API key, read from
-- the relayed transactions themselves so they hold across replicas and restarts.
--
-- call_digest: the EIP-712 digest of the signed call a row relays (NULL for the keeper's own
-- calls). A reverted row holds the same signed call back for the cool-down.
ALTER TABLE relay_transactions ADD COLUMN call_digest BYTEA CHECK (length(call_digest) = 32);
CREATE INDEX relay_transactions_digest ON relay_transactions (chain_id, call_digest) WHERE call_digest IS NOT NULL;
CREATE INDEX relay_transactions_signer_time ON relay_transactions (chain_id, signer, created_at);
CREATE INDEX relay_transactions_key_time ON relay_transactions (api_key_id, created_at);
CREATE INDEX relay_transactions_reverts ON relay_transactions (chain_id, signer, mined_at) WHERE failure = 'reverted';

-- A call admitted but not queued yet: its worst-case cost counts against the key's and the
-- signer's budgets until its row exists (then the row counts) or the reservation expires (the
-- process died in between). Written under the key's and signer's transaction-level advisory
-- locks, together with the check, so two processes cannot both take the last room.
CREATE TABLE admission_reservations (
    id          BIGSERIAL      PRIMARY KEY,
    chain_id    BIGINT         NOT NULL,
    api_key_id  BIGINT         NOT NULL,
    signer      BYTEA          NOT NULL CHECK (length(signer) = 20),
    wei         NUMERIC(78, 0) NOT NULL CHECK (wei >= 0),
    expires_at  TIMESTAMPTZ    NOT NULL
);
CREATE INDEX admission_reservations_key ON admission_reservations (api_key_id);
CREATE INDEX admission_reservations_signer ON admission_reservations (chain_id, signer);
