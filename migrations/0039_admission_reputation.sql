-- A signer's and an API key family's reputation as admission reads it (src/store/admission.rs):
-- seconds since the signed call `$4` last reverted on chain, reverts in the last `$5` seconds of
-- the signer and of the key's family (migration 0016), and seconds since the last call of each.
-- One definition for both admission paths (with and without daily budgets). Parameters are
-- positional: in an SQL function a column named like a parameter would win over it.
CREATE FUNCTION admission_reputation(BIGINT, BIGINT, BYTEA, BYTEA, DOUBLE PRECISION)
RETURNS TABLE (
    digest_reverted_secs_ago DOUBLE PRECISION,
    signer_reverts BIGINT,
    key_reverts BIGINT,
    signer_last_secs_ago DOUBLE PRECISION,
    key_last_secs_ago DOUBLE PRECISION
) LANGUAGE sql STABLE AS $$
    WITH family AS (SELECT api_key_family($2) AS id)
    SELECT
        (SELECT extract(epoch FROM now() - max(coalesce(mined_at, updated_at)))::float8
           FROM relay_transactions WHERE chain_id = $1 AND call_digest = $4 AND failure = 'reverted'),
        (SELECT count(*) FROM relay_transactions
           WHERE chain_id = $1 AND signer = $3 AND failure = 'reverted'
             AND mined_at > now() - make_interval(secs => $5)),
        (SELECT count(*) FROM relay_transactions
           WHERE api_key_id IN (SELECT id FROM family) AND failure = 'reverted'
             AND mined_at > now() - make_interval(secs => $5)),
        (SELECT extract(epoch FROM now() - max(created_at))::float8
           FROM relay_transactions WHERE chain_id = $1 AND signer = $3),
        (SELECT extract(epoch FROM now() - max(created_at))::float8
           FROM relay_transactions WHERE api_key_id IN (SELECT id FROM family))
$$;
