-- What a mined relayed transaction cost its sponsor, in wei: gas used × the receipt's effective
-- gas price when it is recorded for the block the transaction is in now (`priced_block_hash =
-- block_hash`), else × the signed max fee per gas of the mined attempt (an upper bound). One
-- definition for the reference summary and the sponsor's daily spend (src/store/history.rs), so
-- both are plain literals the sqlx macros can check at compile time.
-- Not STRICT: a price not recorded (NULL) or a hash that differs falls to the max fee, as a CASE
-- does; a single expression, so the planner inlines it.
CREATE FUNCTION relay_gas_cost_wei(gas_used BIGINT, effective_gas_price NUMERIC, priced_block_hash BYTEA,
                                   block_hash BYTEA, max_fee_per_gas BIGINT) RETURNS NUMERIC
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT gas_used::numeric * CASE WHEN priced_block_hash = block_hash
        THEN effective_gas_price ELSE max_fee_per_gas::numeric END
$$;
