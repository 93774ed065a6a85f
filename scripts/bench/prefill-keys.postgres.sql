-- scripts/bench.sh --key-growth: N completed createCustomer key records of one company,
-- made directly in the bench database (psql -v tenant=<company uuid> -v n=<N>).
insert into idempotency_keys (tenant, operation, idem_key, fingerprint, response_status, response_body, location, resource_id, request_id, created_at, completed_at, expires_at)
select :'tenant', 'createCustomer', 'prefill-' || g, md5(g::text), 201,
       convert_to('{"id":"' || md5('id' || g)::uuid || '","name":"Customer prefill-' || g || '","email":"p' || g || '@example.com","created_at":"2026-01-01T00:00:00.000000Z"}', 'UTF8'),
       '/api/customers/' || md5('id' || g)::uuid, md5('id' || g)::uuid, 'prefill', now(), now(), now() + interval '1 day'
from generate_series(1, :n) as g;
vacuum analyze idempotency_keys;
