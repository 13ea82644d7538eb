-- References and transaction history (SPEC §4).
--
-- `reference`: the client's optional label of a relayed call (the `Reference` header or body
-- field of execute), at most 255 characters. `operations`: the user operations the call runs, in
-- order. The amounts moved are in `relay_transaction_amounts`, one row per operation that moves
-- money, in StreamPay's internal 18-decimal units (deposits scaled up from token base units), as
-- exact NUMERIC so sums never round. All are written in the database transaction that queues the
-- call.
ALTER TABLE relay_transactions
    ADD COLUMN reference  TEXT CHECK (length(reference) BETWEEN 1 AND 255),
    ADD COLUMN operations TEXT[],
    -- The receipt's effective gas price (wei) of the mined transaction, filled in lazily when spend
    -- is computed; valid only while `priced_block_hash` equals `block_hash` (a reorg may re-mine
    -- it elsewhere at another price).
    ADD COLUMN effective_gas_price NUMERIC(78, 0),
    ADD COLUMN priced_block_hash   BYTEA;

CREATE TABLE relay_transaction_amounts (
    transaction_id  BIGINT         NOT NULL REFERENCES relay_transactions (id) ON DELETE CASCADE,
    -- Position of the operation in the call (0 unless a multicall).
    position        INT            NOT NULL,
    operation       TEXT           NOT NULL,
    amount          NUMERIC(78, 0) NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (transaction_id, position)
);

-- History is listed per API key, newest first, with keyset pagination on id.
CREATE INDEX relay_transactions_key_history ON relay_transactions (api_key_id, id DESC);
CREATE INDEX relay_transactions_key_reference ON relay_transactions (api_key_id, reference) WHERE reference IS NOT NULL;
-- Sponsor spend since UTC midnight (in-flight rows use relay_transactions_in_flight).
CREATE INDEX relay_transactions_sponsor_mined ON relay_transactions (chain_id, sponsor, mined_at);
