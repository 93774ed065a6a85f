-- pgbench script of scripts/bench.sh: what the ungated server (examples/bench_ungated.rs)
-- issues for one createCustomer: the customer insert in BEGIN … COMMIT. Three round
-- trips, one commit.
-- Variables: :company (pgbench -D company=<uuid>), :client_id (pgbench's own).
\set r random(1, 1000000000000000)
begin;
insert into customers (company_id, id, name, email, request_fingerprint, created_at) values (:company::uuid, md5(:company::text || :client_id::text || '-' || :r::text)::uuid, 'Customer pgbench', 'pgbench@example.com', '', now());
commit;
