-- API key lifecycle (SPEC §4, docs/keys.md): scopes, environment, expiry, CIDR allowlist, rate
-- limit, rotation and soft deletion.
--
-- Keys made before this migration (`sp_test_…` / `sp_live_…`) keep working with the scopes that
-- covered everything a key could do then: read, relay, webhooks. `admin` is never granted
-- implicitly: it lets a key manage keys, which no key could do before.

ALTER TABLE api_keys
    -- What the key may call: read (GETs), relay (builders, execute, cancel), webhooks, admin.
    ADD COLUMN scopes TEXT[] NOT NULL DEFAULT '{read,relay,webhooks}'
        CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'relay', 'webhooks', 'admin']),
    -- `test` keys are `sk_test_…`, `live` keys `sk_live_…` (the prefix tells them apart at a glance).
    ADD COLUMN environment TEXT NOT NULL DEFAULT 'test' CHECK (environment IN ('test', 'live')),
    -- Past this instant the key answers 401 key_expired.
    ADD COLUMN expires_at TIMESTAMPTZ,
    -- Client networks the key may be used from (CIDR text, validated by the API); empty = anywhere.
    ADD COLUMN allowed_cidrs TEXT[] NOT NULL DEFAULT '{}',
    -- Requests per minute per relayer process; NULL = unlimited.
    ADD COLUMN rate_limit_per_minute INT CHECK (rate_limit_per_minute > 0),
    -- Rotation: the new key points at the key it replaced; the old key records when.
    ADD COLUMN rotated_from BIGINT REFERENCES api_keys (id),
    ADD COLUMN rotated_at TIMESTAMPTZ,
    -- Revoked keys stay listed for audit (401 key_revoked); deleted keys are gone from the API
    -- (401 invalid_api_key, absent from listings) but the row stays so relay_transactions keep
    -- pointing at the key that sent them.
    ADD COLUMN deleted_at TIMESTAMPTZ;

UPDATE api_keys SET environment = 'live' WHERE key_prefix LIKE 'sp\_live\_%';

-- New keys always state their scopes and environment.
ALTER TABLE api_keys ALTER COLUMN scopes DROP DEFAULT, ALTER COLUMN environment DROP DEFAULT;

CREATE UNIQUE INDEX api_keys_rotated_from ON api_keys (rotated_from) WHERE rotated_from IS NOT NULL;
