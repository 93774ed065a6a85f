-- Claims are no longer rows: a write's claim is its own write transaction (SQLite has
-- one writer). A row of idempotency_keys now always holds a completed response, so the
-- in-flight state, the fencing token and the lease column go. Claims of writes that
-- never completed carry nothing: they are removed, and their keys execute afresh.

delete from idempotency_keys where state = 'in_flight';

drop index if exists idempotency_keys_in_flight;

create table idempotency_keys_completed (
    tenant          text    not null,
    operation       text    not null,
    idem_key        text    not null,
    fingerprint     text    not null,
    response_status integer not null,
    response_body   blob    not null,
    location        text,
    resource_id     text,
    request_id      text,
    created_at      integer not null,
    completed_at    integer not null,
    expires_at      integer not null,
    primary key (tenant, operation, idem_key)
) without rowid;

insert into idempotency_keys_completed
    (tenant, operation, idem_key, fingerprint, response_status, response_body, location,
     resource_id, request_id, created_at, completed_at, expires_at)
select tenant, operation, idem_key, fingerprint, response_status, response_body, location,
       resource_id, request_id, created_at, completed_at, expires_at
from idempotency_keys;

drop table idempotency_keys;
alter table idempotency_keys_completed rename to idempotency_keys;
create index idempotency_keys_expires_at on idempotency_keys (expires_at);
