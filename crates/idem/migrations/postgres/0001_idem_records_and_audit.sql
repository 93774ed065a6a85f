-- idem: idempotency records and the append-only audit log (PostgreSQL).

create table idempotency_keys (
    tenant          text        not null,
    operation       text        not null,
    idem_key        text        not null,
    fingerprint     text        not null,
    state           text        not null check (state in ('in_flight', 'completed')),
    fence           bigint      not null,
    lease_until     timestamptz,
    response_status integer,
    response_body   bytea,
    location        text,
    resource_id     uuid,
    request_id      text,
    created_at      timestamptz not null,
    completed_at    timestamptz,
    expires_at      timestamptz not null,
    primary key (tenant, operation, idem_key)
);
create index idempotency_keys_expires_at on idempotency_keys (expires_at);
create index idempotency_keys_in_flight on idempotency_keys (created_at) where state = 'in_flight';

create table idempotent_write_audit_log (
    id                    uuid             not null,
    operation_name        text             not null,
    operation_type        text             not null,
    deterministic_id      text,
    company_id            text             not null,
    user_id               text,
    status                text             not null check (status in ('new', 'replayed', 'failed')),
    execution_duration_ms double precision not null,
    timestamp             timestamptz      not null,
    request_id            text,
    idempotency_key       text,
    route_path            text,
    http_method           text,
    workflows_triggered   integer          not null default 0,
    side_effects_executed boolean          not null default false,
    error_message         text,
    metadata              jsonb,
    primary key (id, timestamp)
) partition by range (timestamp);

create table idempotent_write_audit_log_default
    partition of idempotent_write_audit_log default;

create index idempotent_write_audit_log_company on idempotent_write_audit_log (company_id, timestamp);
create index idempotent_write_audit_log_operation on idempotent_write_audit_log (operation_name, timestamp);
create index idempotent_write_audit_log_status on idempotent_write_audit_log (status, timestamp);
create index idempotent_write_audit_log_timestamp on idempotent_write_audit_log (timestamp);

-- Monthly partitions from this month to `months_ahead` months ahead. A month whose rows
-- already sit in the default partition is left there (noticed, not failed).
create function idem_ensure_audit_partitions(months_ahead integer default 2) returns void
language plpgsql as $$
declare
    m date;
    i integer;
begin
    for i in 0..months_ahead loop
        m := (date_trunc('month', now() at time zone 'utc') + make_interval(months => i))::date;
        begin
            execute format(
                'create table if not exists %I partition of idempotent_write_audit_log for values from (%L) to (%L)',
                'idempotent_write_audit_log_' || to_char(m, 'YYYY_MM'),
                m::text || ' 00:00:00+00',
                (m + interval '1 month')::date::text || ' 00:00:00+00');
        exception when others then
            raise notice 'audit partition for % not created: %', m, sqlerrm;
        end;
    end loop;
end $$;

select idem_ensure_audit_partitions(2);

-- The audit log is append-only: rows change or go only inside the archive procedure,
-- which sets `idem.audit_archive = 'on'` for its own transaction.
create function idem_audit_append_only() returns trigger
language plpgsql as $$
begin
    if coalesce(current_setting('idem.audit_archive', true), '') = 'on' then
        if tg_op = 'DELETE' then
            return old;
        end if;
        return new;
    end if;
    raise exception 'idempotent_write_audit_log is append-only (% refused)', tg_op
        using errcode = 'insufficient_privilege';
end $$;

create trigger idempotent_write_audit_log_append_only
    before update or delete on idempotent_write_audit_log
    for each row execute function idem_audit_append_only();

create function idem_audit_no_truncate() returns trigger
language plpgsql as $$
begin
    raise exception 'idempotent_write_audit_log is append-only (TRUNCATE refused)'
        using errcode = 'insufficient_privilege';
end $$;

create trigger idempotent_write_audit_log_no_truncate
    before truncate on idempotent_write_audit_log
    for each statement execute function idem_audit_no_truncate();

-- Deletes expired idempotency records in batches and returns how many went; callable
-- from pg_cron. A record counts as expired once `expires_at` has passed and no live
-- executor holds it.
create function retention_prune_idempotency_keys(batch_size integer default 5000)
returns bigint
language plpgsql as $$
declare
    total bigint := 0;
    n bigint;
begin
    loop
        with doomed as (
            select tenant, operation, idem_key
            from idempotency_keys
            where expires_at <= now()
              and (state = 'completed' or lease_until <= now())
            limit batch_size
            for update skip locked
        )
        delete from idempotency_keys k
        using doomed d
        where k.tenant = d.tenant and k.operation = d.operation and k.idem_key = d.idem_key;
        get diagnostics n = row_count;
        total := total + n;
        exit when n < batch_size;
    end loop;
    return total;
end $$;
