-- Every change to API keys or their sponsors notifies `streampay_keys` in the same transaction,
-- so each relayer process can keep authenticated keys in memory and drop them the moment a key
-- is revoked, rotated, deleted or changed (src/api/key_cache.rs).
CREATE FUNCTION streampay_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('streampay_keys', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION streampay_keys_changed();
CREATE TRIGGER api_key_sponsors_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_key_sponsors
    FOR EACH STATEMENT EXECUTE FUNCTION streampay_keys_changed();
