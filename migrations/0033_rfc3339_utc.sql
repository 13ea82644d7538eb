-- One way to show a timestamp: RFC 3339 in UTC with a `Z`, with 0, 3 (milliseconds) or 6
-- (microseconds) fraction digits. Every answer that carries a time formats it here, so the
-- statements that read times are plain literals the sqlx macros can check at compile time.
-- NULL in, NULL out (a row not mined yet has no mined time).
CREATE FUNCTION rfc3339_utc(ts TIMESTAMPTZ, fraction_digits INT) RETURNS TEXT
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC', CASE fraction_digits
        WHEN 6 THEN 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'
        WHEN 3 THEN 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'
        ELSE 'YYYY-MM-DD"T"HH24:MI:SS"Z"'
    END)
$$;
