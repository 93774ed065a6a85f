-- pgbench script of scripts/bench.sh: exactly the statements the server issues for one
-- new createCustomer on PostgreSQL, in order and in the same messages (run with -M simple:
-- `\;` keeps two statements in one message). Update it with the write path:
--   1. the claim and BEGIN in one message: the lease's limits, the scope's advisory lock
--      and the record lookup (idem `store::begin_claim`, `idem_claim()` of migration
--      0005), then `begin`, which makes the claim's implicit transaction the write's;
--   2. the customer insert (domain/customers.rs; the server prepares it);
--   3. the completion and COMMIT in one message: the completed record and the `new`
--      audit row (idem `store::complete_and_commit`, `idem_complete()` of migration 0007),
--      then `commit`.
-- The server writes client-sent text into statements 1 and 3 as hex (`convert_from(decode(
-- …, 'hex'), 'UTF8')`); this script writes plain literals.
-- Left out: what the server issues less than once per write (the token lookup, cached
-- for a second).
-- Variables: :company (pgbench -D company=<uuid>; quoted here, as -M simple writes
-- variables into the text), :client_id (pgbench's own).
\set r random(1, 1000000000000000)
select locked, fingerprint, response_status, response_body, location, (extract(epoch from expires_at) * 1000000)::bigint as expires_us, remaining_us from idem_claim(('x' || substr(md5(':company'::text || :client_id::text || '-' || :r::text), 1, 16))::bit(64)::bigint, ':company'::text, 'createCustomer', 'pgb-' || :client_id::text || '-' || :r::text, '30000ms', '5000ms') \; begin;
insert into customers (company_id, id, name, email, request_fingerprint, created_at) values (':company'::uuid, md5(':company'::text || :client_id::text || '-' || :r::text)::uuid, 'Customer pgbench', 'pgbench@example.com', 'fingerprint-pgbench', now());
select idem_complete(':company'::text, 'createCustomer', 'pgb-' || :client_id::text || '-' || :r::text, 'fingerprint-pgbench', 201::integer, convert_to('{"id":"00000000-0000-0000-0000-000000000000","name":"Customer pgbench","email":"pgbench@example.com","created_at":"2026-01-01T00:00:00.000000Z"}', 'UTF8'), '/api/customers/x', md5(':company'::text || :client_id::text || '-' || :r::text)::uuid, 'pgbench', 86400::float8, gen_random_uuid(), 'createCustomer', 'high-risk', md5(':company'::text || :client_id::text || '-' || :r::text)::uuid::text, ':company'::text, 'pgbench', 'new', 1.0::float8, (extract(epoch from now()) * 1000000)::bigint, 'pgbench', 'pgb-' || :client_id::text || '-' || :r::text, '/api/customers', 'POST', 0::integer, false, null, null::jsonb) \; commit;
