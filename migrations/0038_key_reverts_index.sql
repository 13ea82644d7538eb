-- Admission counts an API key's reverted calls in the reputation window on every execute
-- (src/store/admission.rs). Without this index that count read every row the key ever relayed
-- (through `relay_transactions_key_time`), a cost growing with the key's history; the signer's
-- count already has `relay_transactions_reverts`.
CREATE INDEX relay_transactions_key_reverts ON relay_transactions (api_key_id, mined_at) WHERE failure = 'reverted';
