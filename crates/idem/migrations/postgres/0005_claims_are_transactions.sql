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
