-- Inventory and workflows (PostgreSQL): items and their adjustments, workflows and
-- their updates, the workflow-instance outbox, notifications, per-company webhook
-- signing secrets. Keys lead with company_id and foreign keys carry it (shard-ready).
-- Record rows carry the deterministic UUIDv5 id and the request fingerprint.

create table inventory_items (
    company_id          uuid        not null references companies (id),
    id                  uuid        not null,
    sku                 text        not null,
    name                text        not null,
    quantity            bigint      not null check (quantity >= 0),
    request_fingerprint text        not null,
    created_at          timestamptz not null,
    primary key (company_id, id),
    constraint inventory_items_sku_key unique (company_id, sku)
);
create index inventory_items_list on inventory_items (company_id, created_at desc, id desc);

create table inventory_adjustments (
    company_id          uuid        not null,
    id                  uuid        not null,
    item_id             uuid        not null,
    delta               bigint      not null check (delta <> 0),
    reason              text        not null,
    quantity_after      bigint      not null check (quantity_after >= 0),
    request_fingerprint text        not null,
    created_at          timestamptz not null,
    primary key (company_id, id),
    foreign key (company_id, item_id) references inventory_items (company_id, id)
);
create index inventory_adjustments_item on inventory_adjustments (company_id, item_id, created_at);

create table workflows (
    company_id          uuid        not null references companies (id),
    id                  uuid        not null,
    name                text        not null,
    trigger_event       text        not null check (trigger_event in ('invoice.created',
                            'invoice.finalized', 'payment.created', 'refund.created',
                            'payroll.executed', 'inventory.adjusted', 'manual')),
    action_type         text        not null check (action_type in ('notify', 'webhook')),
    action_target       text,
    action_url          text,
    active              boolean     not null,
    request_fingerprint text        not null,
    created_at          timestamptz not null,
    updated_at          timestamptz not null,
    primary key (company_id, id),
    check ((action_type = 'notify') = (action_target is not null)),
    check ((action_type = 'webhook') = (action_url is not null))
);
create index workflows_list on workflows (company_id, created_at desc, id desc);
create index workflows_active_trigger on workflows (company_id, trigger_event) where active;

-- The record of updateWorkflow.
create table workflow_updates (
    company_id          uuid        not null,
    id                  uuid        not null,
    workflow_id         uuid        not null,
    active              boolean     not null,
    request_fingerprint text        not null,
    created_at          timestamptz not null,
    primary key (company_id, id),
    foreign key (company_id, workflow_id) references workflows (company_id, id)
);

-- The outbox. trigger_entity_id is text (the record's UUIDv5, lowercase) so the seeds'
-- `join … on trigger_entity_id = deterministic_id` against the audit log holds as
-- written; it is null for manual instances (which emit no event).
create table workflow_instances (
    company_id          uuid        not null,
    id                  uuid        not null,
    workflow_id         uuid        not null,
    trigger_entity_type text        not null,
    trigger_entity_id   text,
    input               text,
    status              text        not null check (status in ('pending', 'running', 'delivered', 'failed')),
    attempts            integer     not null default 0,
    last_error          text,
    next_attempt_at     timestamptz not null,
    lease_until         timestamptz,
    claim_token         uuid,
    request_fingerprint text,
    created_at          timestamptz not null,
    updated_at          timestamptz not null,
    completed_at        timestamptz,
    primary key (company_id, id),
    foreign key (company_id, workflow_id) references workflows (company_id, id)
);
create index workflow_instances_list on workflow_instances (company_id, created_at desc, id desc);
create index workflow_instances_trigger on workflow_instances (company_id, trigger_entity_id);
create index workflow_instances_due on workflow_instances (next_attempt_at)
    where status in ('pending', 'running');

create table notifications (
    company_id  uuid        not null,
    id          uuid        not null,
    instance_id uuid        not null,
    target      text        not null,
    created_at  timestamptz not null,
    primary key (company_id, id),
    constraint notifications_instance_key unique (company_id, instance_id),
    foreign key (company_id, instance_id) references workflow_instances (company_id, id)
);

create table webhook_secrets (
    company_id uuid        primary key references companies (id),
    secret     text        not null,
    version    integer     not null,
    created_at timestamptz not null
);

-- The record of rotateWebhookSecret.
create table webhook_secret_rotations (
    company_id          uuid        not null references companies (id),
    id                  uuid        not null,
    version             integer     not null,
    request_fingerprint text        not null,
    created_at          timestamptz not null,
    primary key (company_id, id)
);
