-- Finality (review S4): relayed transactions are re-checked until the chain's finality depth,
-- and webhook events follow reorgs of the pipeline and rollbacks of the index.
-- See docs/relay.md ("Finality") and docs/webhooks.md ("Reorgs and finality").

-- Where a contract event came from, so an index rollback finds the events of the blocks it
-- orphans (NULL for transaction and sponsor events).
ALTER TABLE webhook_events
    ADD COLUMN contract      BYTEA CHECK (length(contract) = 20),
    ADD COLUMN block_number  BIGINT,
    ADD COLUMN block_hash    BYTEA CHECK (length(block_hash) = 32),
    -- event.retracted: the id of the event it retracts (no foreign key: pruning the original
    -- must not take an undelivered retraction with it).
    ADD COLUMN retracts      BIGINT,
    -- Set when an index rollback orphaned the event's block: its undelivered deliveries were
    -- withdrawn, and a retraction went to the endpoints that may have received it.
    ADD COLUMN orphaned_at   TIMESTAMPTZ;
CREATE INDEX webhook_events_block ON webhook_events (chain_id, contract, block_number)
    WHERE contract IS NOT NULL AND orphaned_at IS NULL;

-- Contract events written before this migration carry their origin in their data.
UPDATE webhook_events
SET contract = decode(substr(data ->> 'contract_address', 3), 'hex'),
    block_number = (data ->> 'block_number')::BIGINT,
    block_hash = decode(substr(data ->> 'block_hash', 3), 'hex')
WHERE transaction_id IS NULL AND data ? 'log_index' AND data ? 'contract_address' AND data ? 'block_hash';

-- transaction.* events, per state change of a relayed transaction, written in the same database
-- transaction as the change:
--   transaction.mined      the row is mined in a block (0 confirmations); once per block: a call
--                          reorged out and mined again in another block fires it again, with the
--                          new block (the key carries the block hash)
--   transaction.reorged    the block holding a mined row left the canonical chain before the
--                          chain's finality depth (the row is back in the queue; `data` names the
--                          orphaned block)
--   transaction.finalized  the row is `confirmed`: its block is at the chain's finality depth and
--                          is never re-checked again
--   transaction.failed     the row failed, expired (once per row)
-- `data` holds what the event is about at that moment (the block); the dispatcher adds the rest
-- of the transaction's view when it builds the body.
CREATE OR REPLACE FUNCTION webhook_relay_transaction_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind TEXT;
    key  TEXT;
    info JSONB;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.status = 'mined' AND NEW.status IN ('pending', 'submitted') THEN
        kind := 'transaction.reorged';
        key := kind || ':' || NEW.id || ':' || coalesce(encode(OLD.block_hash, 'hex'), '');
        info := jsonb_build_object(
            'reorged_block_number', OLD.block_number,
            'reorged_block_hash', '0x' || encode(OLD.block_hash, 'hex'),
            'reorged_transaction_hash', '0x' || encode(OLD.tx_hash, 'hex'));
    ELSIF NEW.status = 'mined' THEN
        kind := 'transaction.mined';
        key := kind || ':' || NEW.id || ':' || coalesce(encode(NEW.block_hash, 'hex'), '');
        info := jsonb_build_object(
            'state', 'mined',
            'transaction_hash', '0x' || encode(NEW.tx_hash, 'hex'),
            'block_number', NEW.block_number,
            'block_hash', '0x' || encode(NEW.block_hash, 'hex'),
            'gas_used', NEW.gas_used);
    ELSIF NEW.status = 'confirmed' THEN
        kind := 'transaction.finalized';
        key := kind || ':' || NEW.id;
        info := jsonb_build_object(
            'state', 'confirmed',
            'transaction_hash', '0x' || encode(NEW.tx_hash, 'hex'),
            'block_number', NEW.block_number,
            'block_hash', '0x' || encode(NEW.block_hash, 'hex'),
            'gas_used', NEW.gas_used);
    ELSIF NEW.status IN ('failed', 'expired', 'reverted') THEN
        kind := 'transaction.failed';
        key := kind || ':' || NEW.id;
        info := NULL;
    ELSE
        RETURN NULL;
    END IF;
    -- Rows of a status change that does not move the row (mined -> mined) write nothing new.
    IF TG_OP = 'UPDATE' AND OLD.status = NEW.status THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_events (event_key, chain_id, type, api_key_id, transaction_id, data)
    VALUES (key, NEW.chain_id, kind, NEW.api_key_id, NEW.id, jsonb_strip_nulls(info))
    ON CONFLICT (event_key) DO NOTHING;
    RETURN NULL;
END
$$;
