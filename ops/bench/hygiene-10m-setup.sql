-- 10 M idempotency records for measuring the key-hygiene query (docs/BENCHMARKS.md,
-- "Key hygiene at 10 M keys"). Run against an empty scratch database:
--   createdb hygiene_bench && psql -d hygiene_bench -f ops/bench/hygiene-10m-setup.sql
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
\timing on
insert into idempotency_keys (tenant, operation, idem_key, fingerprint, state, fence, lease_until, response_status, response_body, location, resource_id, request_id, created_at, completed_at, expires_at)
select 'tenant-' || (g % 1000), 'createCustomer', 'key-' || g,
       md5(g::text) || md5((g+1)::text),
       case when g % 100000 = 0 then 'in_flight' else 'completed' end,
       1,
       case when g % 100000 = 0 then now() + interval '30 seconds' end,
       201, convert_to('{"id":"' || g || '"}', 'UTF8'), '/api/customers/' || g, gen_random_uuid(), 'req-' || g,
       now() - interval '1 hour' * (g % 48),
       now() - interval '1 hour' * (g % 48),
       -- 1% expired (awaiting prune), the rest live for up to a day
       case when g % 100 = 0 then now() - interval '1 hour' else now() + interval '1 minute' * (g % 1440) end
from generate_series(1, 10000000) g;
create index idempotency_keys_expires_at on idempotency_keys (expires_at);
create index idempotency_keys_in_flight on idempotency_keys (created_at) where state = 'in_flight';
vacuum analyze idempotency_keys;
select pg_size_pretty(pg_total_relation_size('idempotency_keys'));
