-- The seeds' audit reports round double precision figures to two places:
-- `ROUND(AVG(execution_duration_ms), 2)`, and `ROUND(p95, 2)` where p95 is
-- `PERCENTILE_CONT(…) WITHIN GROUP (ORDER BY execution_duration_ms)`. PostgreSQL has
-- `round(numeric, integer)` only, and percentile_cont returns double precision whatever
-- the column's type, so no column type makes those reports run. This overload does:
-- it rounds through numeric, exactly as `round(x::numeric, n)` would.
create function round(double precision, integer) returns numeric
language sql immutable strict parallel safe
as $$ select pg_catalog.round($1::numeric, $2) $$;
