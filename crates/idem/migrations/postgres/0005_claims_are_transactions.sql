-- Claims are no longer rows: a write's claim is its own transaction (a transaction-scoped
-- advisory lock on the scope's hash, with the lease enforced by the server through
-- idle_in_transaction_session_timeout and statement_timeout). A row of
-- idempotency_keys now always holds a completed response, so the in-flight state, the
-- fencing token and the lease column go.
--
-- Upgrade: stop every node of the previous version before applying this migration (a
-- node of the previous version would keep writing in-flight rows). Claims of writes
-- that never completed carry nothing: they are removed, and their keys execute afresh.

delete from idempotency_keys where state = 'in_flight';

drop index if exists idempotency_keys_in_flight;

alter table idempotency_keys
    drop column state,
    drop column fence,
    drop column lease_until,
    alter column response_status set not null,
    alter column response_body set not null,
    alter column completed_at set not null;

create or replace function retention_prune_idempotency_keys(batch_size integer default 5000)
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

-- The claim, in one round trip: the lease's limits for the calling transaction, the
-- scope's transaction-scoped advisory lock (never waiting), then the live record. The
-- record is read by a statement of its own after the lock: a volatile function takes a
-- fresh snapshot for each statement, so a completion committed just before the lock
-- was granted is seen.
create function idem_claim(
    lock_key bigint, p_tenant text, p_operation text, p_key text,
    lease text, lock_wait text)
returns table (
    locked boolean, fingerprint text, response_status integer, response_body bytea,
    location text, expires_at timestamptz, remaining_us bigint)
language plpgsql volatile as $$
declare
    got boolean;
begin
    perform set_config('idle_in_transaction_session_timeout', lease, true),
            set_config('statement_timeout', lease, true),
            set_config('lock_timeout', lock_wait, true);
    got := pg_try_advisory_xact_lock(lock_key);
    return query
        select got, k.fingerprint, k.response_status, k.response_body, k.location,
               k.expires_at,
               (extract(epoch from k.expires_at - now()) * 1000000)::bigint
        from idempotency_keys k
        where k.tenant = p_tenant and k.operation = p_operation and k.idem_key = p_key
          and k.expires_at > now();
    if not found then
        return query select got, null::text, null::integer, null::bytea, null::text,
                            null::timestamptz, null::bigint;
    end if;
end $$;
