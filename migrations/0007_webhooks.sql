-- Webhooks (SPEC §4): endpoints registered by API keys, an outbox of events, and the deliveries
-- of each event to each endpoint with every attempt logged. See src/webhooks/ and docs/webhooks.md.

-- An endpoint belongs to the API key that registered it; only that key sees or deletes it.
CREATE TABLE webhook_endpoints (
    id          BIGSERIAL   PRIMARY KEY,
    api_key_id  BIGINT      NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    url         TEXT        NOT NULL,
    events      TEXT[]      NOT NULL CHECK (cardinality(events) > 0),
    -- Signs every delivery (HMAC-SHA256); shown once, at creation.
    secret      TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at  TIMESTAMPTZ
);
CREATE INDEX webhook_endpoints_live ON webhook_endpoints (api_key_id) WHERE deleted_at IS NULL;

-- The outbox: one row per event, whoever it goes to. `event_key` makes producing an event
-- idempotent (a producer that crashes and runs again, or two replicas, write it once).
CREATE TABLE webhook_events (
    id          BIGSERIAL   PRIMARY KEY,
    event_key   TEXT        NOT NULL UNIQUE,
    chain_id    BIGINT      NOT NULL,
    type        TEXT        NOT NULL,
    -- transaction.*: only endpoints of the key that relayed it receive it.
    api_key_id  BIGINT,
    -- sponsor.balance_low: only endpoints of keys allowed to use this sponsor receive it.
    sponsor     BYTEA,
    -- transaction.*: the relay_transactions row the payload is built from.
    transaction_id BIGINT,
    -- The event's own fields (`data` in the body); NULL until built for transaction events.
    data        JSONB,
    -- The exact JSON body delivered (built once, so every attempt and redelivery sends the same
    -- bytes); NULL until built (transaction events are written by a trigger and built by the
    -- dispatcher).
    payload     TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Deliveries were created for every endpoint subscribed at that point.
    fanned_out  BOOLEAN     NOT NULL DEFAULT false
);
CREATE INDEX webhook_events_pending ON webhook_events (id) WHERE NOT fanned_out;

-- One delivery of an event to an endpoint: retried with backoff until a 2xx or max attempts.
-- A redelivery on demand is a new row (`redelivery_of` the one it repeats).
CREATE TABLE webhook_deliveries (
    id               BIGSERIAL   PRIMARY KEY,
    endpoint_id      BIGINT      NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         BIGINT      NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    redelivery_of    BIGINT      REFERENCES webhook_deliveries (id) ON DELETE SET NULL,
    --   pending    an attempt is due at next_attempt_at (also the lease of an attempt in flight)
    --   succeeded  the endpoint answered 2xx
    --   failed     max attempts reached without a 2xx
    --   canceled   the endpoint was deleted first
    state            TEXT        NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed', 'canceled')),
    attempts         INT         NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ,
    last_status_code INT,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at     TIMESTAMPTZ
);
-- Fanning an event out twice (crash, two replicas) cannot deliver it twice.
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries (endpoint_id, event_id) WHERE redelivery_of IS NULL;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);

-- The delivery log: every HTTP attempt.
CREATE TABLE webhook_attempts (
    id               BIGSERIAL   PRIMARY KEY,
    delivery_id      BIGINT      NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt          INT         NOT NULL,
    -- NULL when no HTTP answer came (timeout, connection refused).
    status_code      INT,
    error            TEXT,
    duration_ms      BIGINT      NOT NULL,
    attempted_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- When the next attempt was scheduled (NULL: none: succeeded or gave up).
    next_attempt_at  TIMESTAMPTZ
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, attempt);

-- How far contract events of the index were turned into webhook events, per deployment.
CREATE TABLE webhook_cursors (
    chain_id      BIGINT NOT NULL,
    contract      BYTEA  NOT NULL CHECK (length(contract) = 20),
    block_number  BIGINT NOT NULL,
    log_index     INT    NOT NULL,
    PRIMARY KEY (chain_id, contract)
);

-- sponsor.balance_low fires once per episode: when the balance drops below the threshold, again
-- only after it went back above it.
CREATE TABLE webhook_sponsor_alerts (
    chain_id  BIGINT  NOT NULL,
    sponsor   BYTEA   NOT NULL CHECK (length(sponsor) = 20),
    low       BOOLEAN NOT NULL,
    episode   INT     NOT NULL,
    PRIMARY KEY (chain_id, sponsor)
);

-- transaction.mined / transaction.failed: written in the same database transaction that moves a
-- relayed transaction there, so no state change is ever missed (and none is written twice).
CREATE FUNCTION webhook_relay_transaction_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind TEXT;
BEGIN
    IF NEW.status IN ('mined', 'confirmed') THEN
        kind := 'transaction.mined';
    ELSIF NEW.status IN ('failed', 'expired', 'reverted') THEN
        kind := 'transaction.failed';
    ELSE
        RETURN NULL;
    END IF;
    INSERT INTO webhook_events (event_key, chain_id, type, api_key_id, transaction_id)
    VALUES (kind || ':' || NEW.id, NEW.chain_id, kind, NEW.api_key_id, NEW.id)
    ON CONFLICT (event_key) DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER webhook_relay_transaction_event
    AFTER INSERT OR UPDATE OF status ON relay_transactions
    FOR EACH ROW EXECUTE FUNCTION webhook_relay_transaction_event();
