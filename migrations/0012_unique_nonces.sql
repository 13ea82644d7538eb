-- Unique (unordered) bySig nonces (issue 12). Building a call reserves nothing any more: rows
-- are written only when `meta/execute` claims a signed call, so no request can hold another
-- call back. A nonce lives in the space of its type (0 account, 2 unique; see chain/traits.rs):
-- account nonce 5 and unique nonce 5 are different nonces.
ALTER TABLE meta_nonces ADD COLUMN nonce_type SMALLINT NOT NULL DEFAULT 0 CHECK (nonce_type IN (0, 1, 2));
ALTER TABLE meta_nonces DROP CONSTRAINT meta_nonces_pkey;
ALTER TABLE meta_nonces ADD PRIMARY KEY (chain_id, contract, signer, nonce_type, nonce);
-- Reservations made by the old build endpoints never execute by themselves: drop them.
DELETE FROM meta_nonces WHERE status = 'built';

ALTER TABLE relay_transactions ADD COLUMN meta_nonce_type SMALLINT NOT NULL DEFAULT 0
    CHECK (meta_nonce_type IN (0, 1, 2));
