-- pgbench script of scripts/bench.sh: exactly the statements the server issues for one
-- new createCustomer on PostgreSQL, in order. Update it with the write path:
--   1. begin; 2. the claim: the lease's limits, the scope's advisory lock and the record
--      lookup in one call (idem `store::claim`, `idem_claim()` of migration 0005);
--   3. the customer insert (domain/customers.rs); 4. the completed record and the `new`
--      audit row in one statement (idem `store::complete`, COMPLETE_SQL_PG); 5. commit.
-- Left out: what the server issues less than once per write (the token lookup, cached
-- for a second).
-- Variables: :company (pgbench -D company=<uuid>), :client_id (pgbench's own).
\set r random(1, 1000000000000000)
begin;
select locked, fingerprint, response_status, response_body, location, expires_at, remaining_us from idem_claim(('x' || substr(md5(:company::text || :client_id::text || '-' || :r::text), 1, 16))::bit(64)::bigint, :company::text, 'createCustomer', 'pgb-' || :client_id::text || '-' || :r::text, '30000ms', '5000ms');
insert into customers (company_id, id, name, email, request_fingerprint, created_at) values (:company::uuid, md5(:company::text || :client_id::text || '-' || :r::text)::uuid, 'Customer pgbench', 'pgbench@example.com', 'fingerprint-pgbench', now());
with record as (insert into idempotency_keys (tenant, operation, idem_key, fingerprint, response_status, response_body, location, resource_id, request_id, created_at, completed_at, expires_at) values (:company::text, 'createCustomer', 'pgb-' || :client_id::text || '-' || :r::text, 'fingerprint-pgbench', 201, convert_to('{"id":"00000000-0000-0000-0000-000000000000","name":"Customer pgbench","email":"pgbench@example.com","created_at":"2026-01-01T00:00:00.000000Z"}', 'UTF8'), '/api/customers/x', md5(:company::text || :client_id::text || '-' || :r::text)::uuid, 'pgbench', now(), now(), now() + make_interval(secs => 86400)) on conflict (tenant, operation, idem_key) do update set fingerprint = excluded.fingerprint, response_status = excluded.response_status, response_body = excluded.response_body, location = excluded.location, resource_id = excluded.resource_id, request_id = excluded.request_id, created_at = excluded.created_at, completed_at = excluded.completed_at, expires_at = excluded.expires_at where idempotency_keys.expires_at <= now() returning 1) insert into idempotent_write_audit_log (id, operation_name, operation_type, deterministic_id, company_id, user_id, status, execution_duration_ms, timestamp, request_id, idempotency_key, route_path, http_method, workflows_triggered, side_effects_executed, error_message, metadata) select gen_random_uuid(), 'createCustomer', 'high-risk', md5(:company::text || :client_id::text || '-' || :r::text)::uuid::text, :company::text, 'pgbench', 'new', 1.0, now(), 'pgbench', 'pgb-' || :client_id::text || '-' || :r::text, '/api/customers', 'POST', 0, false, null, null from record;
commit;
