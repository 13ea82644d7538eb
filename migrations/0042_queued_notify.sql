-- The worker of a sponsor's queue is woken when any process queues a call for that sponsor,
-- instead of finding it at its next look: `<chain id>:0x<sponsor>:<highest id>` on the
-- `streampay_queued` channel, once per sponsor per inserting statement, sent when the enqueue
-- commits (src/store/settle.rs names the channel; src/pipeline/mod.rs listens and wakes the
-- worker; the highest id lets the process that queued the rows, which woke its worker already,
-- pass over its own).
CREATE FUNCTION relay_transactions_queued_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    q RECORD;
BEGIN
    FOR q IN SELECT chain_id, sponsor, max(id) AS top FROM queued GROUP BY chain_id, sponsor LOOP
        PERFORM pg_notify('streampay_queued', q.chain_id::text || ':0x' || encode(q.sponsor, 'hex') || ':' || q.top::text);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER relay_transactions_queued_notify
    AFTER INSERT ON relay_transactions
    REFERENCING NEW TABLE AS queued
    FOR EACH STATEMENT
    EXECUTE FUNCTION relay_transactions_queued_notify();
