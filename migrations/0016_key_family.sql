-- A key and the keys that replaced it by rotation form one family. Webhook endpoints belong to
-- the family: they keep receiving after a rotation (the new key relays, lists and manages them)
-- and stop once no key of the family is live (revoked, expired or deleted).
ALTER TABLE api_keys ADD COLUMN family_id BIGINT;

WITH RECURSIVE chain (id, family) AS (
    SELECT id, id FROM api_keys WHERE rotated_from IS NULL
    UNION ALL
    SELECT k.id, c.family FROM api_keys k JOIN chain c ON k.rotated_from = c.id
)
UPDATE api_keys a SET family_id = chain.family FROM chain WHERE a.id = chain.id;
UPDATE api_keys SET family_id = id WHERE family_id IS NULL;

CREATE FUNCTION api_keys_set_family() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.family_id := coalesce((SELECT family_id FROM api_keys WHERE id = NEW.rotated_from), NEW.id);
    RETURN NEW;
END $$;
CREATE TRIGGER api_keys_family BEFORE INSERT ON api_keys FOR EACH ROW EXECUTE FUNCTION api_keys_set_family();

ALTER TABLE api_keys ALTER COLUMN family_id SET NOT NULL;
CREATE INDEX api_keys_family ON api_keys (family_id);

-- Whether some key of the family of key `key_id` can still authenticate.
CREATE FUNCTION api_key_family_live(key_id BIGINT) RETURNS BOOLEAN LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM api_keys k
        WHERE k.family_id = (SELECT family_id FROM api_keys WHERE id = key_id)
          AND k.deleted_at IS NULL AND k.revoked_at IS NULL
          AND (k.expires_at IS NULL OR k.expires_at > now()))
$$;

-- The keys of the family of key `key_id` (itself included).
CREATE FUNCTION api_key_family(key_id BIGINT) RETURNS SETOF BIGINT LANGUAGE sql STABLE AS $$
    SELECT id FROM api_keys WHERE family_id = (SELECT family_id FROM api_keys WHERE id = key_id)
$$;
