-- pgbench script of scripts/bench.sh: exactly the statements the server issues today for
-- one new createCustomer on PostgreSQL, in order. Update it with the write path:
--   1. the claim, one autocommit statement committed without waiting for the log flush
--      (idem `store::claim`, CLAIM_SQL_PG);
--   2. begin; 3. `find_existing` (domain/customers.rs); 4. the customer insert;
--   5. the fenced completion (idem `store::complete`); 6. the `new` audit row
--      (idem `telemetry::insert_audit`); 7. commit.
-- Left out: what the server issues less than once per write (the token lookup, cached
-- for a second; lease renewals every lease/3).
-- Variables: :company (pgbench -D company=<uuid>), :client_id (pgbench's own).
\set r random(1, 1000000000000000)
insert into idempotency_keys (tenant, operation, idem_key, fingerprint, state, fence, lease_until, request_id, created_at, expires_at) select :company::text, 'createCustomer', 'pgb-' || :client_id::text || '-' || :r::text, 'fingerprint-pgbench', 'in_flight', 1, now() + interval '30 seconds', 'pgbench', now(), now() + interval '1 day' from (select set_config('synchronous_commit', 'off', true)) as relaxed on conflict (tenant, operation, idem_key) do update set fingerprint = excluded.fingerprint, state = 'in_flight', fence = idempotency_keys.fence + 1, lease_until = excluded.lease_until, request_id = excluded.request_id, created_at = excluded.created_at, expires_at = excluded.expires_at, response_status = null, response_body = null, location = null, resource_id = null, completed_at = null where idempotency_keys.expires_at <= now() or (idempotency_keys.state = 'in_flight' and idempotency_keys.lease_until <= now()) returning fence;
begin;
select request_fingerprint, id, name, email, created_at from customers where company_id = :company::uuid and id = md5(:company::text || :client_id::text || '-' || :r::text)::uuid;
insert into customers (company_id, id, name, email, request_fingerprint, created_at) values (:company::uuid, md5(:company::text || :client_id::text || '-' || :r::text)::uuid, 'Customer pgbench', 'pgbench@example.com', 'fingerprint-pgbench', now());
update idempotency_keys set state = 'completed', response_status = 201, response_body = convert_to('{"id":"00000000-0000-0000-0000-000000000000","name":"Customer pgbench","email":"pgbench@example.com","created_at":"2026-01-01T00:00:00.000000Z"}', 'UTF8'), location = '/api/customers/x', resource_id = md5(:company::text || :client_id::text || '-' || :r::text)::uuid, completed_at = now(), expires_at = now() + interval '1 day', lease_until = null where tenant = :company::text and operation = 'createCustomer' and idem_key = 'pgb-' || :client_id::text || '-' || :r::text and fence = 1 and state = 'in_flight';
insert into idempotent_write_audit_log (id, operation_name, operation_type, deterministic_id, company_id, user_id, status, execution_duration_ms, timestamp, request_id, idempotency_key, route_path, http_method, workflows_triggered, side_effects_executed, error_message, metadata) values (gen_random_uuid(), 'createCustomer', 'high-risk', md5(:company::text || :client_id::text || '-' || :r::text)::uuid::text, :company::text, 'pgbench', 'new', 1.0, now(), 'pgbench', 'pgb-' || :client_id::text || '-' || :r::text, '/api/customers', 'POST', 0, false, null, null);
commit;
