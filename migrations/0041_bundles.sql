-- Bundles: many users' signed calls sent in one sponsor transaction through the contract's
-- `bundle(bytes[])` entry point (docs/throughput.md section 3).
--
-- Every relayed call keeps its own row (status, meta nonce claim, history, webhooks). The rows
-- of a bundle share its sponsor nonce and transaction hash; one of them, the leader, holds the
-- bundle's signed attempts and is the row the sponsor's worker sends, bumps, cancels and moves;
-- the others (members) follow it. `bundle_id` is the leader's id on every row of a bundle, the
-- leader's own included, and NULL on a call sent alone; `bundle_index` is the call's position in
-- the bundle (its `BundleCallResult(index, ...)`).
ALTER TABLE relay_transactions
    ADD COLUMN bundle_id    BIGINT REFERENCES relay_transactions (id),
    ADD COLUMN bundle_index INT,
    ADD CONSTRAINT relay_transactions_bundle_index CHECK ((bundle_id IS NULL) = (bundle_index IS NULL));
CREATE INDEX relay_transactions_bundle ON relay_transactions (bundle_id) WHERE bundle_id IS NOT NULL;

-- A bundle's calls share its hash: unique only among rows that send their own transaction.
ALTER TABLE relay_transactions DROP CONSTRAINT relay_transactions_tx_hash_key;
CREATE UNIQUE INDEX relay_transactions_own_hash ON relay_transactions (tx_hash)
    WHERE bundle_id IS NULL OR bundle_id = id;
-- Likewise one transaction per sponsor nonce: the rows of a bundle share the leader's.
ALTER TABLE relay_transactions DROP CONSTRAINT relay_transactions_sponsor_nonce;
CREATE UNIQUE INDEX relay_transactions_sponsor_nonce ON relay_transactions (chain_id, sponsor, sponsor_nonce)
    WHERE bundle_id IS NULL OR bundle_id = id;

-- What the leader sends: `bundle(calls)`, the gas limit of the whole bundle (each row keeps its
-- own call and its own gas limit, which is what the admission ledger and history count), and the
-- earliest deadline of its calls (0: none), past which the bundle is cancelled.
CREATE TABLE relay_bundles (
    leader_id  BIGINT PRIMARY KEY REFERENCES relay_transactions (id) ON DELETE CASCADE,
    calldata   BYTEA  NOT NULL,
    gas_limit  BIGINT NOT NULL CHECK (gas_limit > 0),
    deadline   BIGINT NOT NULL,
    size       INT    NOT NULL CHECK (size >= 2)
);

-- The admission ledger (migration 0040) prices a row by its transaction's latest attempt: for a
-- bundle's rows that is the leader's. A new attempt of a leader re-prices every row of its bundle.
CREATE OR REPLACE FUNCTION admission_spend_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    t relay_transactions%ROWTYPE;
    latest BIGINT;
    previous BIGINT;
BEGIN
    SELECT max_fee_per_gas INTO latest FROM tx_attempts
        WHERE transaction_id = NEW.transaction_id ORDER BY id DESC LIMIT 1;
    SELECT max_fee_per_gas INTO previous FROM tx_attempts
        WHERE transaction_id = NEW.transaction_id AND id <> NEW.id ORDER BY id DESC LIMIT 1;
    -- The rows first, locked as an update of them would: a concurrent change of their gas (the
    -- other trigger) then either sees this attempt or is seen by it, never neither.
    FOR t IN SELECT * FROM relay_transactions
             WHERE id = NEW.transaction_id OR bundle_id = NEW.transaction_id
             ORDER BY id FOR NO KEY UPDATE LOOP
        IF latest IS DISTINCT FROM previous THEN
            INSERT INTO admission_spend_deltas (day, chain_id, signer, api_key_id, wei)
            VALUES ((t.created_at AT TIME ZONE 'UTC')::date, t.chain_id, t.signer, t.api_key_id,
                    coalesce(t.gas_used, t.gas_limit, 0)::numeric
                      * (coalesce(latest, 0)::numeric - coalesce(previous, 0)::numeric));
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION admission_spend_gas() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    fee BIGINT;
BEGIN
    SELECT max_fee_per_gas INTO fee FROM tx_attempts
        WHERE transaction_id = coalesce(NEW.bundle_id, NEW.id) ORDER BY id DESC LIMIT 1;
    IF fee IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO admission_spend_deltas (day, chain_id, signer, api_key_id, wei)
    VALUES ((NEW.created_at AT TIME ZONE 'UTC')::date, NEW.chain_id, NEW.signer, NEW.api_key_id,
            (coalesce(NEW.gas_used, NEW.gas_limit, 0)::numeric - coalesce(OLD.gas_used, OLD.gas_limit, 0)::numeric)
              * fee::numeric);
    RETURN NULL;
END
$$;
