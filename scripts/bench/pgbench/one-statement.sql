-- pgbench script of scripts/bench.sh: one createCustomer's durable writes as ONE statement
-- (the completed key record, the customer, the `new` audit row; one round trip, one
-- commit): the limit a new write can approach. Same tables, columns and values as the
-- server's statements (idem `store`, `telemetry::insert_audit`, `domain/customers.rs`).
-- Variables: :company (pgbench -D company=<uuid>), :client_id (pgbench's own).
\set r random(1, 1000000000000000)
with k as (
    select 'pgb-' || :client_id::text || '-' || :r::text as idem_key,
           md5(:company::text || :client_id::text || '-' || :r::text)::uuid as id
), record as (
    insert into idempotency_keys (tenant, operation, idem_key, fingerprint, response_status, response_body, location, resource_id, request_id, created_at, completed_at, expires_at)
    select :company::text, 'createCustomer', k.idem_key, 'fingerprint-pgbench', 201, convert_to('{"id":"00000000-0000-0000-0000-000000000000","name":"Customer pgbench","email":"pgbench@example.com","created_at":"2026-01-01T00:00:00.000000Z"}', 'UTF8'), '/api/customers/' || k.id::text, k.id, 'pgbench', now(), now(), now() + interval '1 day'
    from k
), customer as (
    insert into customers (company_id, id, name, email, request_fingerprint, created_at)
    select :company::uuid, k.id, 'Customer pgbench', 'pgbench@example.com', 'fingerprint-pgbench', now()
    from k
)
insert into idempotent_write_audit_log (id, operation_name, operation_type, deterministic_id, company_id, user_id, status, execution_duration_ms, timestamp, request_id, idempotency_key, route_path, http_method, workflows_triggered, side_effects_executed, error_message, metadata)
select gen_random_uuid(), 'createCustomer', 'high-risk', k.id::text, :company::text, 'pgbench', 'new', 1.0, now(), 'pgbench', k.idem_key, '/api/customers', 'POST', 0, false, null, null
from k;
