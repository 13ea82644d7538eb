-- API keys: only the SHA-256 of the key is stored; the key itself is shown once at creation.
CREATE TABLE api_keys (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT        NOT NULL,
    key_hash    BYTEA       NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    -- The key's first characters, so an operator can tell keys apart without the secret.
    key_prefix  TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);

-- The sponsor accounts a key may spend gas from.
CREATE TABLE api_key_sponsors (
    api_key_id  BIGINT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    sponsor     BYTEA  NOT NULL CHECK (length(sponsor) = 20),
    -- Position in the key's list: the first is used when a request names no sponsor.
    position    INT    NOT NULL,
    PRIMARY KEY (api_key_id, sponsor)
);

-- bySig account nonces handed out by the build endpoints or in flight through execute, so two
-- calls built in a row get consecutive nonces and both go through.
CREATE TABLE meta_nonces (
    chain_id    BIGINT      NOT NULL,
    contract    BYTEA       NOT NULL CHECK (length(contract) = 20),
    signer      BYTEA       NOT NULL CHECK (length(signer) = 20),
    nonce       BIGINT      NOT NULL CHECK (nonce >= 0),
    -- built: handed out, not yet executed; submitted: sent by a sponsor, no receipt yet;
    -- mined / failed: finished (kept for history, never block a nonce again).
    status      TEXT        NOT NULL CHECK (status IN ('built', 'submitted', 'mined', 'failed')),
    -- The signed deadline (chain time); a built nonce past it can never execute, so it frees up.
    deadline    BIGINT      NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, contract, signer, nonce)
);

-- Every transaction a sponsor sent for a meta-transaction.
CREATE TABLE relay_transactions (
    id             BIGSERIAL PRIMARY KEY,
    chain_id       BIGINT      NOT NULL,
    contract       BYTEA       NOT NULL CHECK (length(contract) = 20),
    api_key_id     BIGINT      REFERENCES api_keys (id) ON DELETE SET NULL,
    signer         BYTEA       NOT NULL CHECK (length(signer) = 20),
    meta_nonce     BIGINT      NOT NULL,
    sponsor        BYTEA       NOT NULL CHECK (length(sponsor) = 20),
    sponsor_nonce  BIGINT      NOT NULL,
    tx_hash        BYTEA       NOT NULL UNIQUE CHECK (length(tx_hash) = 32),
    calldata       BYTEA       NOT NULL,
    status         TEXT        NOT NULL CHECK (status IN ('submitted', 'mined', 'reverted')),
    gas_used       BIGINT,
    block_number   BIGINT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX relay_transactions_signer ON relay_transactions (chain_id, contract, signer);
