-- Waiters of a relayed call in every process are woken when its row settles (leaves `pending` or
-- `submitted` for any other status), instead of each process polling for the rows it waits on:
-- the row's id on the `streampay_settled` channel, sent when the settling transaction commits
-- (src/store/settle.rs; src/pipeline/mod.rs listens, and keeps a slow poll as a fallback).
CREATE FUNCTION relay_transaction_settled_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('streampay_settled', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER relay_transaction_settled_notify
    AFTER UPDATE OF status ON relay_transactions
    FOR EACH ROW
    WHEN (OLD.status IN ('pending', 'submitted') AND NEW.status NOT IN ('pending', 'submitted'))
    EXECUTE FUNCTION relay_transaction_settled_notify();
