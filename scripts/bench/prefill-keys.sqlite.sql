-- scripts/bench.sh --key-growth: N completed createCustomer key records of one company,
-- made directly in the bench database (sqlite3, with the parameters :tenant and :n set).
with recursive g(i) as (select 1 union all select i + 1 from g where i < :n)
insert into idempotency_keys (tenant, operation, idem_key, fingerprint, response_status, response_body, location, resource_id, request_id, created_at, completed_at, expires_at)
select :tenant, 'createCustomer', 'prefill-' || i, lower(hex(randomblob(16))), 201,
       cast('{"id":"00000000-0000-0000-0000-' || printf('%012d', i) || '","name":"Customer prefill-' || i || '","email":"p' || i || '@example.com","created_at":"2026-01-01T00:00:00.000000Z"}' as blob),
       '/api/customers/00000000-0000-0000-0000-' || printf('%012d', i), '00000000-0000-0000-0000-' || printf('%012d', i),
       'prefill', unixepoch() * 1000000, unixepoch() * 1000000, (unixepoch() + 86400) * 1000000
from g;
analyze;
