-- Only the audit archive may change or remove audit rows.
--
-- Until now the append-only trigger honoured `idem.audit_archive = 'on'`, a custom
-- setting any session can set. It now also requires the current user to be the
-- dedicated role `idem_audit_archiver` (NOLOGIN). Ordinary sessions reach that role only
-- through `idem_audit_archive_take(before)`, a SECURITY DEFINER function it owns, which
-- deletes the rows older than `before` and returns them, so that an archive command
-- writes them elsewhere in the same transaction (and a failed write rolls the delete
-- back). A role an operator explicitly makes a member of `idem_audit_archiver` can act
-- as it too (`set role`); superusers can always bypass triggers.
--
-- Creating the role needs CREATEROLE (or a superuser). Without it this migration still
-- applies: the audit log then stays strictly append-only until an operator runs the
-- block below as a privileged user (see docs/GUARANTEES.md, "Hardening").

create or replace function idem_audit_append_only() returns trigger
language plpgsql as $$
begin
    if coalesce(current_setting('idem.audit_archive', true), '') = 'on'
       and current_user = 'idem_audit_archiver' then
        if tg_op = 'DELETE' then
            return old;
        end if;
        return new;
    end if;
    raise exception 'idempotent_write_audit_log is append-only (% refused)', tg_op
        using errcode = 'insufficient_privilege';
end $$;

create function idem_audit_archive_take(before timestamptz)
returns setof idempotent_write_audit_log
language plpgsql security definer as $$
begin
    perform set_config('idem.audit_archive', 'on', true);
    return query
        delete from idempotent_write_audit_log where "timestamp" < before returning *;
    perform set_config('idem.audit_archive', 'off', true);
end $$;

-- Pin the definer function's search path to the schema the audit log lives in.
do $$
begin
    execute format(
        'alter function idem_audit_archive_take(timestamptz) set search_path = %I, pg_temp',
        current_schema());
end $$;

-- Callable by the role that migrates (the application's), not by every role.
revoke all on function idem_audit_archive_take(timestamptz) from public;
do $$
begin
    execute format('grant execute on function idem_audit_archive_take(timestamptz) to %I',
        current_user);
end $$;

do $$
begin
    begin
        -- Roles are shared by every database of the cluster: another database may have
        -- created it already, or be creating it right now.
        create role idem_audit_archiver nologin;
    exception when others then
        null;
    end;
    if not exists (select 1 from pg_roles where rolname = 'idem_audit_archiver') then
        raise notice 'role idem_audit_archiver could not be created: audit rows cannot be archived until an operator creates it';
        return;
    end if;
    begin
        execute format('grant usage, create on schema %I to idem_audit_archiver', current_schema());
        grant select, update, delete on idempotent_write_audit_log to idem_audit_archiver;
        alter function idem_audit_archive_take(timestamptz) owner to idem_audit_archiver;
    exception when insufficient_privilege then
        raise notice 'idem_audit_archive_take could not be handed to idem_audit_archiver (%): audit rows cannot be archived until an operator does it', sqlerrm;
    end;
end $$;
