-- Event index (SPEC §6): every StreamPay event, the checkpoint, recent block hashes, the undo
-- journal for reorgs, and the state derived from the events. One row set per
-- (chain_id, contract): each deployment is indexed by its own task with its own checkpoint.
-- Integers above 2^63 (balances, rates, nonces) are NUMERIC(78, 0), exact like the contract's.

-- Where indexing stopped; written in the same transaction as the events it covers.
CREATE TABLE idx_checkpoints (
    chain_id         BIGINT      NOT NULL,
    contract         BYTEA       NOT NULL CHECK (length(contract) = 20),
    block_number     BIGINT      NOT NULL,
    block_hash       BYTEA       NOT NULL CHECK (length(block_hash) = 32),
    block_timestamp  BIGINT      NOT NULL,
    -- Highest block indexed without an undo journal (far behind the head when it was written):
    -- a reorg cannot roll back below it.
    final_block      BIGINT      NOT NULL,
    -- Latest chain head the indexer saw, for lag reporting.
    chain_head       BIGINT      NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, contract)
);

-- Hashes of recent blocks (the reorg window), to find the common ancestor after a reorg.
CREATE TABLE idx_blocks (
    chain_id     BIGINT NOT NULL,
    contract     BYTEA  NOT NULL,
    number       BIGINT NOT NULL,
    hash         BYTEA  NOT NULL CHECK (length(hash) = 32),
    parent_hash  BYTEA  NOT NULL CHECK (length(parent_hash) = 32),
    timestamp    BIGINT NOT NULL,
    PRIMARY KEY (chain_id, contract, number)
);

-- Every StreamPay event, one flat row per log (see src/indexer/events.rs for the mapping):
-- kind 1 Transfer(a1 from, a2 to, v1 value), 2 StreamCreated / 3 StreamRevoked (a1 user,
-- a2 author, v1 encodedRates), 4 Liquidated (a1 account, a2 liquidator, v1 reward, v2 streams),
-- 5 ProjectIdClaimed (a1 owner, v1 id), 6 DefaultSettingsSet (v1 id, v2 fee),
-- 7 UserSettingsSet (a1 user, v1 id, v2 fee), 8 NonceUsed (a1 signer, v1 nonce, v2 type,
-- selector), 9 SponsoredCallCharged (a1 signer, a2 relayer, v1 amount).
CREATE TABLE idx_events (
    chain_id         BIGINT         NOT NULL,
    contract         BYTEA          NOT NULL,
    block_number     BIGINT         NOT NULL,
    block_hash       BYTEA          NOT NULL,
    block_timestamp  BIGINT         NOT NULL,
    tx_hash          BYTEA          NOT NULL,
    tx_index         INT            NOT NULL,
    log_index        INT            NOT NULL,
    kind             SMALLINT       NOT NULL,
    a1               BYTEA,
    a2               BYTEA,
    v1               NUMERIC(78, 0),
    v2               NUMERIC(78, 0),
    selector         BYTEA,
    -- Re-ingesting a block is harmless: the same log can only be stored once.
    UNIQUE (chain_id, block_hash, log_index)
);
CREATE INDEX idx_events_position ON idx_events (chain_id, contract, block_number, log_index);

-- Undo journal: the value of a derived row before a block inside the reorg window first changed
-- it (prev NULL: the row did not exist). Rolling back to block N restores, per key, the entry of
-- the lowest block above N.
CREATE TABLE idx_undo (
    chain_id      BIGINT NOT NULL,
    contract      BYTEA  NOT NULL,
    block_number  BIGINT NOT NULL,
    key           JSONB  NOT NULL,
    prev          JSONB
);
CREATE INDEX idx_undo_block ON idx_undo (chain_id, contract, block_number);

-- Derived: StreamPay's `accountInfo` per account.
CREATE TABLE idx_accounts (
    chain_id       BIGINT         NOT NULL,
    contract       BYTEA          NOT NULL,
    account        BYTEA          NOT NULL CHECK (length(account) = 20),
    balance        NUMERIC(78, 0) NOT NULL,
    income_rate    NUMERIC(78, 0) NOT NULL,
    outgoing_rate  NUMERIC(78, 0) NOT NULL,
    updated        BIGINT         NOT NULL,
    PRIMARY KEY (chain_id, contract, account)
);

-- Derived: live streams, `position` being the index in the subscriber's `allSubscriptions`.
CREATE TABLE idx_streams (
    chain_id         BIGINT         NOT NULL,
    contract         BYTEA          NOT NULL,
    subscriber       BYTEA          NOT NULL CHECK (length(subscriber) = 20),
    author           BYTEA          NOT NULL CHECK (length(author) = 20),
    position         INT            NOT NULL,
    income_rate      NUMERIC(78, 0) NOT NULL,
    outgoing_rate    NUMERIC(78, 0) NOT NULL,
    project_id       BIGINT         NOT NULL,
    encoded_rates    NUMERIC(78, 0) NOT NULL,
    since_block      BIGINT         NOT NULL,
    since_timestamp  BIGINT         NOT NULL,
    PRIMARY KEY (chain_id, contract, subscriber, author)
);
CREATE INDEX idx_streams_author ON idx_streams (chain_id, contract, author);

-- Derived: next bySig nonce per signer, nonce type (0 account, 1 selector) and selector
-- (zero for account nonces).
CREATE TABLE idx_nonces (
    chain_id    BIGINT         NOT NULL,
    contract    BYTEA          NOT NULL,
    signer      BYTEA          NOT NULL CHECK (length(signer) = 20),
    nonce_type  SMALLINT       NOT NULL,
    selector    BYTEA          NOT NULL CHECK (length(selector) = 4),
    next_nonce  NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, contract, signer, nonce_type, selector)
);

-- Derived: used unique (type 2) bySig nonces.
CREATE TABLE idx_unique_nonces (
    chain_id  BIGINT         NOT NULL,
    contract  BYTEA          NOT NULL,
    signer    BYTEA          NOT NULL CHECK (length(signer) = 20),
    nonce     NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, contract, signer, nonce)
);

-- Derived: claimed projects and their fees (basis points).
CREATE TABLE idx_projects (
    chain_id       BIGINT NOT NULL,
    contract       BYTEA  NOT NULL,
    project_id     BIGINT NOT NULL,
    owner          BYTEA  NOT NULL CHECK (length(owner) = 20),
    default_fee    INT    NOT NULL,
    claimed_block  BIGINT NOT NULL,
    PRIMARY KEY (chain_id, contract, project_id)
);

CREATE TABLE idx_project_user_fees (
    chain_id    BIGINT NOT NULL,
    contract    BYTEA  NOT NULL,
    project_id  BIGINT NOT NULL,
    author      BYTEA  NOT NULL CHECK (length(author) = 20),
    fee         INT    NOT NULL,
    PRIMARY KEY (chain_id, contract, project_id, author)
);
