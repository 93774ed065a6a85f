-- idem: idempotency records and the append-only audit log (SQLite).
-- Timestamps are INTEGER microseconds since the epoch; ids are lowercase hyphenated TEXT.

create table idempotency_keys (
    tenant          text    not null,
    operation       text    not null,
    idem_key        text    not null,
    fingerprint     text    not null,
    state           text    not null check (state in ('in_flight', 'completed')),
    fence           integer not null,
    lease_until     integer,
    response_status integer,
    response_body   blob,
    location        text,
    resource_id     text,
    request_id      text,
    created_at      integer not null,
    completed_at    integer,
    expires_at      integer not null,
    primary key (tenant, operation, idem_key)
) without rowid;
create index idempotency_keys_expires_at on idempotency_keys (expires_at);
create index idempotency_keys_in_flight on idempotency_keys (created_at) where state = 'in_flight';

create table idempotent_write_audit_log (
    id                    text    not null primary key,
    operation_name        text    not null,
    operation_type        text    not null,
    deterministic_id      text,
    company_id            text    not null,
    user_id               text,
    status                text    not null check (status in ('new', 'replayed', 'failed')),
    execution_duration_ms real    not null,
    timestamp             integer not null,
    request_id            text,
    idempotency_key       text,
    route_path            text,
    http_method           text,
    workflows_triggered   integer not null default 0,
    side_effects_executed integer not null default 0,
    error_message         text,
    metadata              text
);
create index idempotent_write_audit_log_company on idempotent_write_audit_log (company_id, timestamp);
create index idempotent_write_audit_log_operation on idempotent_write_audit_log (operation_name, timestamp);
create index idempotent_write_audit_log_status on idempotent_write_audit_log (status, timestamp);
create index idempotent_write_audit_log_timestamp on idempotent_write_audit_log (timestamp);

-- The archive procedure inserts a row here inside its own transaction and deletes it
-- before committing; outside that, UPDATE and DELETE on the audit log are refused.
create table idem_audit_archive_unlock (token integer primary key);

create trigger idempotent_write_audit_log_no_update
before update on idempotent_write_audit_log
when not exists (select 1 from idem_audit_archive_unlock)
begin
    select raise(abort, 'idempotent_write_audit_log is append-only (UPDATE refused)');
end;

create trigger idempotent_write_audit_log_no_delete
before delete on idempotent_write_audit_log
when not exists (select 1 from idem_audit_archive_unlock)
begin
    select raise(abort, 'idempotent_write_audit_log is append-only (DELETE refused)');
end;
