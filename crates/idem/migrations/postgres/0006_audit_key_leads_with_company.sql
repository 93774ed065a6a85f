-- The audit log can be distributed by company_id (Citus), like the rows it describes:
-- a distributed table's primary key must contain the distribution column, and a
-- partitioned table's must contain the partition column. The key becomes
-- (company_id, id, timestamp); (id, timestamp) was unique already, so every existing
-- row keeps a unique key. Rebuilds the key's index on every partition.
alter table idempotent_write_audit_log drop constraint idempotent_write_audit_log_pkey;
alter table idempotent_write_audit_log add primary key (company_id, id, "timestamp");
