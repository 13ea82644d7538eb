-- The persistent per-sponsor transaction queue (SPEC §5) and Idempotency-Key replay (SPEC §4).

-- One row per sponsor account: the next nonce to hand out and which relayer process sends for it.
-- `next_nonce` is only read and advanced under `SELECT … FOR UPDATE` in the same transaction that
-- writes the queued row, so two processes can never hand out one nonce.
CREATE TABLE sponsor_accounts (
    chain_id     BIGINT      NOT NULL,
    address      BYTEA       NOT NULL CHECK (length(address) = 20),
    next_nonce   BIGINT      NOT NULL CHECK (next_nonce >= 0),
    -- The process currently broadcasting and tracking this sponsor's queue, until lease_until.
    lease_owner  TEXT,
    lease_until  TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, address)
);

-- relay_transactions becomes the queue: a row is written (status pending, nonce allocated, the
-- transaction signed) before anything is broadcast.
--   pending    signed, not yet accepted by the node
--   submitted  accepted by the node, no receipt yet
--   mined      in a block; confirmed once `confirmations` blocks deep
--   failed     mined but reverted (failure = 'reverted', revert_reason decoded), or refused by the
--              node for good and its nonce filled by a cancellation (failure = 'rejected')
--   replaced   the signed call was executed by another transaction (its bySig nonce is used)
--   expired    its nonce went to another transaction and the call's deadline has passed
ALTER TABLE relay_transactions DROP CONSTRAINT relay_transactions_status_check;
-- 'reverted' is the status rows written before this migration may hold.
ALTER TABLE relay_transactions ADD CONSTRAINT relay_transactions_status_check
    CHECK (status IN ('pending', 'submitted', 'mined', 'confirmed', 'failed', 'replaced', 'expired', 'reverted'));
ALTER TABLE relay_transactions
    ADD COLUMN gas_limit       BIGINT,
    ADD COLUMN deadline        BIGINT,
    ADD COLUMN block_hash      BYTEA,
    ADD COLUMN failure         TEXT,
    ADD COLUMN revert_reason   TEXT,
    ADD COLUMN last_error      TEXT,
    ADD COLUMN last_sent_at    TIMESTAMPTZ,
    ADD COLUMN mined_at        TIMESTAMPTZ;
ALTER TABLE relay_transactions
    ADD CONSTRAINT relay_transactions_sponsor_nonce UNIQUE (chain_id, sponsor, sponsor_nonce);
CREATE INDEX relay_transactions_in_flight ON relay_transactions (chain_id, sponsor, sponsor_nonce)
    WHERE status IN ('pending', 'submitted', 'mined');

-- Every signed transaction of a row, in order. Written (committed) before it is broadcast, so a
-- crash right after a broadcast still leaves its hash on record to look for a receipt.
CREATE TABLE tx_attempts (
    id                        BIGSERIAL   PRIMARY KEY,
    transaction_id            BIGINT      NOT NULL REFERENCES relay_transactions (id) ON DELETE CASCADE,
    sponsor_nonce             BIGINT      NOT NULL,
    tx_hash                   BYTEA       NOT NULL UNIQUE CHECK (length(tx_hash) = 32),
    raw_tx                    BYTEA       NOT NULL,
    -- call: the relayed call; cancel: a 0-value self-transfer filling the nonce.
    kind                      TEXT        NOT NULL CHECK (kind IN ('call', 'cancel')),
    max_fee_per_gas           BIGINT      NOT NULL,
    max_priority_fee_per_gas  BIGINT      NOT NULL,
    created_at                TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX tx_attempts_transaction ON tx_attempts (transaction_id, id);

-- Idempotency-Key: the first answer to a (key, Idempotency-Key) pair, replayed for retries.
CREATE TABLE idempotency_keys (
    -- SHA-256 of the API key presented (keys never see each other's entries).
    api_key_hash     BYTEA       NOT NULL CHECK (length(api_key_hash) = 32),
    idempotency_key  TEXT        NOT NULL,
    -- SHA-256 of method, path and body: another body under the same key is a client bug.
    request_hash     BYTEA       NOT NULL CHECK (length(request_hash) = 32),
    -- NULL while the first request is still running.
    status           INT,
    content_type     TEXT,
    body             BYTEA,
    -- A request that crashed mid-way stops holding its key after this.
    locked_until     TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_hash, idempotency_key)
);
