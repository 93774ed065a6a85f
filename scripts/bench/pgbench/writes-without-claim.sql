-- pgbench script of scripts/bench.sh: the rows an idempotent write must commit with its
-- business row, and nothing else: the ungated transaction (ungated.sql) plus the
-- completed key record and the `new` audit row in one statement (as idem_complete()
-- writes them), with no claim and no lookup. Four round trips, one commit. Against
-- ungated.sql it bounds what any gate writing the record and the audit row in the
-- write's transaction can reach on this machine.
-- Variables: :company (pgbench -D company=<uuid>), :client_id (pgbench's own).
\set r random(1, 1000000000000000)
begin;
insert into customers (company_id, id, name, email, request_fingerprint, created_at) values (:company::uuid, md5(:company::text || :client_id::text || '-' || :r::text)::uuid, 'Customer pgbench', 'pgbench@example.com', 'fingerprint-pgbench', now());
with record as (insert into idempotency_keys (tenant, operation, idem_key, fingerprint, response_status, response_body, location, resource_id, request_id, created_at, completed_at, expires_at) values (:company::text, 'createCustomer', 'pgb-' || :client_id::text || '-' || :r::text, 'fingerprint-pgbench', 201, convert_to('{"id":"00000000-0000-0000-0000-000000000000","name":"Customer pgbench","email":"pgbench@example.com","created_at":"2026-01-01T00:00:00.000000Z"}', 'UTF8'), '/api/customers/x', md5(:company::text || :client_id::text || '-' || :r::text)::uuid, 'pgbench', now(), now(), now() + interval '1 day') returning idem_key) insert into idempotent_write_audit_log (id, operation_name, operation_type, deterministic_id, company_id, user_id, status, execution_duration_ms, timestamp, request_id, idempotency_key, route_path, http_method, workflows_triggered, side_effects_executed, error_message, metadata) select gen_random_uuid(), 'createCustomer', 'high-risk', md5(:company::text || :client_id::text || '-' || :r::text)::uuid::text, :company::text, 'pgbench', 'new', 1.0, now(), 'pgbench', idem_key, '/api/customers', 'POST', 0, false, null, null from record;
commit;
