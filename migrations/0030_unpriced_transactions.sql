-- The background receipt pricer (src/pricing.rs) asks every second for the mined rows whose
-- effective gas price is not recorded for their current block: a partial index keeps that
-- answer a few index entries long however large the history grows.
CREATE INDEX relay_transactions_unpriced ON relay_transactions (chain_id, id)
    WHERE gas_used IS NOT NULL AND block_hash IS NOT NULL AND priced_block_hash IS DISTINCT FROM block_hash;
