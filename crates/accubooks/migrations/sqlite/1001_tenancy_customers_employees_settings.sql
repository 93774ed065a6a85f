-- AccuBooks core: tenancy, access, settings, customers, employees (SQLite: timestamps are integer microseconds, ids text).
-- Every table is keyed by company_id first so it can be sharded by tenant.
-- Operation record rows have the operation's deterministic UUIDv5 id and keep
-- the request fingerprint (request_fingerprint), so exactly-once outlives the key.

create table operator_settings (
    name  text primary key,
    value text not null
);

create table companies (
    id         text        primary key,
    name       text        not null,
    created_at integer     not null
);

create table members (
    company_id  text        not null references companies (id),
    user_id     text        not null,
    email       text        not null,
    email_lower text        not null,
    role        text        not null check (role in ('admin', 'accountant', 'viewer')),
    created_at  integer     not null,
    updated_at  integer     not null,
    primary key (company_id, user_id),
    constraint members_company_email_key unique (company_id, email_lower)
);
create index members_list on members (company_id, created_at desc, user_id desc);

create table api_tokens (
    token_hash text        primary key,
    company_id text        not null,
    user_id    text        not null,
    created_at integer     not null,
    foreign key (company_id, user_id) references members (company_id, user_id)
);

create table access_grants (
    company_id          text        not null references companies (id),
    id                  text        not null,
    user_id             text        not null,
    email               text        not null,
    role                text        not null,
    request_fingerprint text        not null,
    created_at          integer     not null,
    primary key (company_id, id)
);

create table company_settings (
    company_id              text        primary key references companies (id),
    display_name            text        not null,
    currency                text        not null,
    invoice_prefix          text        not null,
    payment_terms_days      integer     not null,
    fiscal_year_start_month integer     not null,
    version                 integer      not null,
    updated_at              integer     not null
);

create table settings_versions (
    company_id              text        not null references companies (id),
    id                      text        not null,
    version                 integer      not null,
    display_name            text        not null,
    currency                text        not null,
    invoice_prefix          text        not null,
    payment_terms_days      integer     not null,
    fiscal_year_start_month integer     not null,
    request_fingerprint     text,
    created_at              integer     not null,
    primary key (company_id, id),
    constraint settings_versions_company_version_key unique (company_id, version)
);

create table customers (
    company_id          text        not null references companies (id),
    id                  text        not null,
    name                text        not null,
    email               text,
    request_fingerprint text        not null,
    created_at          integer     not null,
    primary key (company_id, id)
);
create index customers_list on customers (company_id, created_at desc, id desc);

create table employees (
    company_id          text        not null references companies (id),
    id                  text        not null,
    name                text        not null,
    email               text,
    pay_type            text        not null check (pay_type in ('salary', 'hourly')),
    annual_salary       integer,
    hourly_rate         integer,
    active              integer     not null,
    request_fingerprint text        not null,
    created_at          integer     not null,
    primary key (company_id, id)
);
create index employees_list on employees (company_id, created_at desc, id desc);
