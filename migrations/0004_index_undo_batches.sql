-- Undo entries are written per committed batch (the value before the batch's first block), not
-- per block: a batch of 100 blocks caught up near the head journals each key once. `batch_to` is
-- the batch's last block (NULL: a one-block batch). A rollback into the middle of a batch rolls
-- back to just before the batch and re-ingests the rest.
ALTER TABLE idx_undo ADD COLUMN batch_to BIGINT;
