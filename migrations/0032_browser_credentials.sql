-- Credentials a web page may hold (docs/keys.md, "Keys in the browser").
--
-- `kind`: `secret` keys (`sk_…`) stay on servers; `publishable` keys (`pk_…`) may ship in a web
-- page, so everything they can do is listed and bounded here: the web origins they answer, the
-- deployments and user operations they may build and relay, and per-key and per-signer rate
-- limits and daily gas budgets, all mandatory. A publishable key only ever has the `relay` scope.
ALTER TABLE api_keys
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'secret' CHECK (kind IN ('secret', 'publishable')),
    -- Web origins (`https://app.example`) whose browsers may call the API with this key (CORS).
    ADD COLUMN allowed_origins TEXT[] NOT NULL DEFAULT '{}',
    -- Deployment names (`USDC`) a publishable key may use; empty for a secret key: any.
    ADD COLUMN allowed_contracts TEXT[] NOT NULL DEFAULT '{}',
    -- User operations (`deposit`, `withdraw`, `pay`, `subscribe`, `unsubscribe`) a publishable
    -- key may build and relay; empty for a secret key: any.
    ADD COLUMN allowed_operations TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN signer_rate_limit_per_minute INT CHECK (signer_rate_limit_per_minute > 0),
    -- Wei per UTC day, tightening `[admission]`'s key and signer budgets for this key.
    ADD COLUMN daily_budget_wei TEXT CHECK (daily_budget_wei ~ '^[0-9]{1,78}$'),
    ADD COLUMN signer_daily_budget_wei TEXT CHECK (signer_daily_budget_wei ~ '^[0-9]{1,78}$');

ALTER TABLE api_keys ADD CONSTRAINT api_keys_publishable_bounded CHECK (
    kind = 'secret' OR (
        scopes = '{relay}'
        AND cardinality(allowed_origins) > 0
        AND cardinality(allowed_contracts) > 0
        AND cardinality(allowed_operations) > 0
        AND rate_limit_per_minute IS NOT NULL
        AND signer_rate_limit_per_minute IS NOT NULL
        AND daily_budget_wei IS NOT NULL
        AND signer_daily_budget_wei IS NOT NULL));

-- Short-lived client tokens (`ct_…`), minted by a secret key for one end user: bound to one
-- signer address and a list of operations, valid at most 600 seconds. Only the SHA-256 is kept.
CREATE TABLE client_tokens (
    id          BIGSERIAL   PRIMARY KEY,
    token_hash  BYTEA       NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    api_key_id  BIGINT      NOT NULL REFERENCES api_keys (id),
    signer      BYTEA       NOT NULL CHECK (length(signer) = 20),
    operations  TEXT[]      NOT NULL CHECK (cardinality(operations) > 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    CHECK (expires_at > created_at AND expires_at <= created_at + interval '600 seconds')
);
-- Pruning (expired for a day) walks this.
CREATE INDEX client_tokens_expiry ON client_tokens (expires_at);
