-- A new write's claim rides on the message that opens its transaction, and its completion
-- on the message that commits it: three round trips (claim + BEGIN, the business
-- statements, completion + COMMIT) instead of five.
--
-- `select ... from idem_claim(...); begin` is sent as one simple query. The claim runs in
-- the message's implicit transaction and the BEGIN turns that transaction into the
-- write's transaction block, so the lease's limits and the advisory lock carry on into it;
-- the caller reads the claim's row and rolls the block back when the scope is not fresh.
--
-- `select idem_complete(...); commit`, inside that block: the completed record and the
-- `new` audit row, then the commit. When a live record stands (which a claim holder
-- cannot meet) the function raises, the COMMIT is skipped and the aborted block is left
-- for the caller to roll back.

-- The completed record (over an expired one, never over a live one) and the write's `new`
-- audit row. Raises IDM01 when a live record stands.
create function idem_complete(
    p_tenant text, p_operation text, p_key text, p_fingerprint text,
    p_status integer, p_body bytea, p_location text, p_resource_id uuid, p_request_id text,
    p_ttl_secs double precision,
    a_id uuid, a_operation_name text, a_operation_type text, a_deterministic_id text,
    a_company_id text, a_user_id text, a_status text, a_duration_ms double precision,
    a_timestamp_us bigint, a_request_id text, a_idempotency_key text, a_route_path text,
    a_http_method text, a_workflows_triggered integer, a_side_effects_executed boolean,
    a_error_message text, a_metadata jsonb)
returns void
language plpgsql volatile as $$
declare
    n bigint;
begin
    with record as (
        insert into idempotency_keys (tenant, operation, idem_key, fingerprint,
            response_status, response_body, location, resource_id, request_id,
            created_at, completed_at, expires_at)
        values (p_tenant, p_operation, p_key, p_fingerprint, p_status, p_body, p_location,
            p_resource_id, p_request_id, now(), now(),
            now() + make_interval(secs => p_ttl_secs))
        on conflict (tenant, operation, idem_key) do update set
            fingerprint = excluded.fingerprint, response_status = excluded.response_status,
            response_body = excluded.response_body, location = excluded.location,
            resource_id = excluded.resource_id, request_id = excluded.request_id,
            created_at = excluded.created_at, completed_at = excluded.completed_at,
            expires_at = excluded.expires_at
        where idempotency_keys.expires_at <= now()
        returning 1
    )
    insert into idempotent_write_audit_log (id, operation_name, operation_type,
        deterministic_id, company_id, user_id, status, execution_duration_ms, timestamp,
        request_id, idempotency_key, route_path, http_method, workflows_triggered,
        side_effects_executed, error_message, metadata)
    select a_id, a_operation_name, a_operation_type, a_deterministic_id, a_company_id,
        a_user_id, a_status, a_duration_ms,
        timestamptz 'epoch' + a_timestamp_us * interval '1 microsecond',
        a_request_id, a_idempotency_key, a_route_path, a_http_method,
        a_workflows_triggered, a_side_effects_executed, a_error_message, a_metadata
    from record;
    get diagnostics n = row_count;
    if n = 0 then
        raise exception 'idempotency key completed' using errcode = 'IDM01';
    end if;
end $$;
