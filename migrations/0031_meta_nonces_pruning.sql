-- Housekeeping prunes settled nonce rows (mined, failed) not updated for a week, hourly
-- (src/server.rs META_NONCE_RETENTION): this index finds them without reading the claims in flight.
CREATE INDEX meta_nonces_settled ON meta_nonces (updated_at) WHERE status <> 'submitted';
