-- Admission's daily spend (src/store/admission.rs) from a ledger instead of a sum over the day's
-- relayed transactions, which grew with the day's traffic and was the costliest statement of an
-- execute.
--
-- What a relayed transaction counts against its signer's and its key's budget is unchanged:
-- gas used (the gas limit while in flight) × the max fee per gas of its latest attempt, on the
-- UTC day it was created; a row without an attempt counts nothing. Triggers record every change
-- of that figure as a delta row (an insert: concurrent writers never wait on each other), and
-- `admission_spend_roll_up()` (run every second by each replica, src/server.rs) folds the deltas
-- into one total per (day, chain, signer) and per (day, key). Admission reads total + pending
-- deltas in one statement, so the figure is exact at any moment, rolled up or not.

CREATE TABLE admission_spend_deltas (
    id          BIGSERIAL PRIMARY KEY,
    day         DATE    NOT NULL,
    chain_id    BIGINT  NOT NULL,
    signer      BYTEA   NOT NULL,
    api_key_id  BIGINT,
    wei         NUMERIC NOT NULL
);
CREATE INDEX admission_spend_deltas_signer ON admission_spend_deltas (day, chain_id, signer);
CREATE INDEX admission_spend_deltas_key ON admission_spend_deltas (day, api_key_id);

CREATE TABLE admission_spend_by_signer (
    day       DATE    NOT NULL,
    chain_id  BIGINT  NOT NULL,
    signer    BYTEA   NOT NULL,
    wei       NUMERIC NOT NULL,
    PRIMARY KEY (day, chain_id, signer)
);

CREATE TABLE admission_spend_by_key (
    day         DATE    NOT NULL,
    api_key_id  BIGINT  NOT NULL,
    wei         NUMERIC NOT NULL,
    PRIMARY KEY (day, api_key_id)
);

-- A new attempt of a row: its spend is now priced at this attempt's max fee (if it is the row's
-- latest) instead of the previous latest one's (or nothing, for the first).
CREATE FUNCTION admission_spend_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    t relay_transactions%ROWTYPE;
    latest BIGINT;
    previous BIGINT;
BEGIN
    -- The row first, locked as an update of it would: a concurrent change of its gas (the other
    -- trigger) then either sees this attempt or is seen by it, never neither.
    SELECT * INTO t FROM relay_transactions WHERE id = NEW.transaction_id FOR NO KEY UPDATE;
    SELECT max_fee_per_gas INTO latest FROM tx_attempts
        WHERE transaction_id = NEW.transaction_id ORDER BY id DESC LIMIT 1;
    SELECT max_fee_per_gas INTO previous FROM tx_attempts
        WHERE transaction_id = NEW.transaction_id AND id <> NEW.id ORDER BY id DESC LIMIT 1;
    IF latest IS NOT DISTINCT FROM previous THEN
        RETURN NULL;
    END IF;
    INSERT INTO admission_spend_deltas (day, chain_id, signer, api_key_id, wei)
    VALUES ((t.created_at AT TIME ZONE 'UTC')::date, t.chain_id, t.signer, t.api_key_id,
            coalesce(t.gas_used, t.gas_limit, 0)::numeric
              * (coalesce(latest, 0)::numeric - coalesce(previous, 0)::numeric));
    RETURN NULL;
END
$$;

CREATE TRIGGER admission_spend_attempt
    AFTER INSERT ON tx_attempts
    FOR EACH ROW EXECUTE FUNCTION admission_spend_attempt();

-- A row's gas changes (mined: gas used instead of the limit; reorged out: back to the limit).
CREATE FUNCTION admission_spend_gas() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    fee BIGINT;
BEGIN
    SELECT max_fee_per_gas INTO fee FROM tx_attempts WHERE transaction_id = NEW.id ORDER BY id DESC LIMIT 1;
    IF fee IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO admission_spend_deltas (day, chain_id, signer, api_key_id, wei)
    VALUES ((NEW.created_at AT TIME ZONE 'UTC')::date, NEW.chain_id, NEW.signer, NEW.api_key_id,
            (coalesce(NEW.gas_used, NEW.gas_limit, 0)::numeric - coalesce(OLD.gas_used, OLD.gas_limit, 0)::numeric)
              * fee::numeric);
    RETURN NULL;
END
$$;

CREATE TRIGGER admission_spend_gas
    AFTER UPDATE OF gas_used, gas_limit ON relay_transactions
    FOR EACH ROW
    WHEN (coalesce(OLD.gas_used, OLD.gas_limit, 0) IS DISTINCT FROM coalesce(NEW.gas_used, NEW.gas_limit, 0))
    EXECUTE FUNCTION admission_spend_gas();

-- Folds the pending deltas into the totals and drops totals older than yesterday; answers how
-- many deltas it folded. One replica at a time (the others skip); the deltas it deletes and the
-- totals it adds them to change in one statement, so a reader sees either side, never both or
-- neither.
CREATE FUNCTION admission_spend_roll_up() RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    folded BIGINT;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('admission:spend:roll_up', 0)) THEN
        RETURN 0;
    END IF;
    WITH moved AS (
        DELETE FROM admission_spend_deltas RETURNING day, chain_id, signer, api_key_id, wei
    ), by_signer AS (
        INSERT INTO admission_spend_by_signer AS s (day, chain_id, signer, wei)
        SELECT day, chain_id, signer, sum(wei) FROM moved GROUP BY day, chain_id, signer
        ORDER BY day, chain_id, signer
        ON CONFLICT (day, chain_id, signer) DO UPDATE SET wei = s.wei + EXCLUDED.wei
    ), by_key AS (
        INSERT INTO admission_spend_by_key AS k (day, api_key_id, wei)
        SELECT day, api_key_id, sum(wei) FROM moved WHERE api_key_id IS NOT NULL GROUP BY day, api_key_id
        ORDER BY day, api_key_id
        ON CONFLICT (day, api_key_id) DO UPDATE SET wei = k.wei + EXCLUDED.wei
    )
    SELECT count(*) INTO folded FROM moved;
    DELETE FROM admission_spend_by_signer WHERE day < (now() AT TIME ZONE 'UTC')::date - 1;
    DELETE FROM admission_spend_by_key WHERE day < (now() AT TIME ZONE 'UTC')::date - 1;
    RETURN folded;
END
$$;

-- Today's (UTC) spend of signer `$2` on chain `$1` and of the family of key `$3` (migration
-- 0016), wei: totals plus the deltas not rolled up yet. Reservations are added by the caller.
CREATE FUNCTION admission_spend_today(BIGINT, BYTEA, BIGINT)
RETURNS TABLE (signer_wei NUMERIC, key_wei NUMERIC) LANGUAGE sql STABLE AS $$
    WITH today AS (SELECT (now() AT TIME ZONE 'UTC')::date AS day),
         family AS (SELECT api_key_family($3) AS id)
    SELECT
        coalesce((SELECT s.wei FROM admission_spend_by_signer s, today
                  WHERE s.day = today.day AND s.chain_id = $1 AND s.signer = $2), 0)
      + coalesce((SELECT sum(d.wei) FROM admission_spend_deltas d, today
                  WHERE d.day = today.day AND d.chain_id = $1 AND d.signer = $2), 0),
        coalesce((SELECT sum(k.wei) FROM admission_spend_by_key k, today
                  WHERE k.day = today.day AND k.api_key_id IN (SELECT id FROM family)), 0)
      + coalesce((SELECT sum(d.wei) FROM admission_spend_deltas d, today
                  WHERE d.day = today.day AND d.api_key_id IN (SELECT id FROM family)), 0)
$$;

-- The rows relayed since yesterday's UTC midnight, as deltas (the first roll-up folds them).
-- Writers wait on the triggers' tables while this migration runs, so none is counted twice.
INSERT INTO admission_spend_deltas (day, chain_id, signer, api_key_id, wei)
SELECT (t.created_at AT TIME ZONE 'UTC')::date, t.chain_id, t.signer, t.api_key_id,
       coalesce(t.gas_used, t.gas_limit, 0)::numeric * l.max_fee_per_gas::numeric
FROM relay_transactions t
JOIN LATERAL (SELECT max_fee_per_gas FROM tx_attempts WHERE transaction_id = t.id ORDER BY id DESC LIMIT 1) l ON true
WHERE t.created_at >= (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') - interval '1 day';
