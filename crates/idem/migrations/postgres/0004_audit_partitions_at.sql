-- Monthly audit partitions relative to a given instant, so the server's daily job (and a
-- test moving the clock) decides which months exist ahead. Replaces the one-argument
-- version of 0001 (a second overload would make `idem_ensure_audit_partitions(3)`
-- ambiguous). Returns the names of the partitions it created. A month whose rows already
-- sit in the default partition is left there and reported by a notice, as before.
drop function idem_ensure_audit_partitions(integer);

create function idem_ensure_audit_partitions(
    months_ahead integer default 2,
    at timestamptz default now()
) returns setof text
language plpgsql as $$
declare
    m date;
    i integer;
    name text;
begin
    for i in 0..months_ahead loop
        m := (date_trunc('month', at at time zone 'utc') + make_interval(months => i))::date;
        name := 'idempotent_write_audit_log_' || to_char(m, 'YYYY_MM');
        if to_regclass(name) is not null then
            continue;
        end if;
        begin
            execute format(
                'create table %I partition of idempotent_write_audit_log for values from (%L) to (%L)',
                name,
                m::text || ' 00:00:00+00',
                (m + interval '1 month')::date::text || ' 00:00:00+00');
            return next name;
        exception when others then
            raise notice 'audit partition for % not created: %', m, sqlerrm;
        end;
    end loop;
end $$;
