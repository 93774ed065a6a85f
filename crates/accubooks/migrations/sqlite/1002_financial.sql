-- Financial operations (SQLite: ids text, timestamps integer microseconds, booleans integer): invoices, finalizations, payments, refunds,
-- payroll runs, bank transactions, reconciliations. Money is integer minor units;
-- dates are 'YYYY-MM-DD' text (compared lexicographically, which is chronological).
-- Record rows carry the deterministic UUIDv5 id and the request fingerprint.

create table invoices (
    company_id          text        not null references companies (id),
    id                  text        not null,
    customer_id         text        not null,
    currency            text        not null,
    due_date            text        not null,
    status              text        not null check (status in ('draft', 'open', 'paid')),
    number              text,
    total               integer      not null,
    amount_paid         integer      not null,
    request_fingerprint text        not null,
    created_at          integer not null,
    primary key (company_id, id),
    constraint invoices_number_key unique (company_id, number),
    check (amount_paid >= 0 and amount_paid <= total)
);
create index invoices_list on invoices (company_id, created_at desc, id desc);

create table invoice_line_items (
    company_id  text   not null,
    invoice_id  text   not null,
    id          text   not null,
    position    integer not null,
    description text   not null,
    quantity    integer not null,
    unit_price  integer not null,
    amount      integer not null,
    primary key (company_id, invoice_id, position),
    foreign key (company_id, invoice_id) references invoices (company_id, id)
);

create table invoice_counters (
    company_id  text   primary key references companies (id),
    last_number integer not null
);

create table invoice_finalizations (
    company_id          text        not null,
    id                  text        not null,
    invoice_id          text        not null,
    number              text        not null,
    request_fingerprint text        not null,
    created_at          integer not null,
    primary key (company_id, id),
    constraint invoice_finalizations_invoice_key unique (company_id, invoice_id),
    foreign key (company_id, invoice_id) references invoices (company_id, id)
);

create table payments (
    company_id          text        not null,
    id                  text        not null,
    invoice_id          text        not null,
    amount              integer      not null check (amount > 0),
    refunded            integer      not null,
    method              text        not null,
    received_on         text        not null,
    request_fingerprint text        not null,
    created_at          integer not null,
    primary key (company_id, id),
    foreign key (company_id, invoice_id) references invoices (company_id, id),
    check (refunded >= 0 and refunded <= amount)
);
create index payments_list on payments (company_id, created_at desc, id desc);
create index payments_invoice on payments (company_id, invoice_id);

create table refunds (
    company_id          text        not null,
    id                  text        not null,
    payment_id          text        not null,
    invoice_id          text        not null,
    amount              integer      not null check (amount > 0),
    reason              text        not null,
    request_fingerprint text        not null,
    created_at          integer not null,
    primary key (company_id, id),
    foreign key (company_id, payment_id) references payments (company_id, id)
);
create index refunds_list on refunds (company_id, created_at desc, id desc);
create index refunds_payment on refunds (company_id, payment_id);

create table payroll_runs (
    company_id          text        not null references companies (id),
    id                  text        not null,
    period_start        text        not null,
    period_end          text        not null,
    pay_date            text        not null,
    total_gross         integer      not null,
    request_fingerprint text        not null,
    created_at          integer not null,
    primary key (company_id, id)
);
create index payroll_runs_list on payroll_runs (company_id, created_at desc, id desc);
create index payroll_runs_period on payroll_runs (company_id, period_start, period_end);

create table payroll_stubs (
    company_id  text   not null,
    run_id      text   not null,
    id          text   not null,
    position    integer not null,
    employee_id text   not null,
    gross       integer not null,
    primary key (company_id, run_id, position),
    foreign key (company_id, run_id) references payroll_runs (company_id, id)
);

create table bank_transactions (
    company_id          text        not null references companies (id),
    id                  text        not null,
    amount              integer      not null check (amount <> 0),
    posted_on           text        not null,
    description         text        not null,
    reconciled          integer     not null,
    payment_id          text,
    reconciled_at       integer,
    request_fingerprint text        not null,
    created_at          integer not null,
    primary key (company_id, id)
);
create index bank_transactions_list on bank_transactions (company_id, created_at desc, id desc);

create table reconciliations (
    company_id          text        not null,
    id                  text        not null,
    bank_transaction_id text        not null,
    payment_id          text        not null,
    request_fingerprint text        not null,
    created_at          integer not null,
    primary key (company_id, id),
    constraint reconciliations_transaction_key unique (company_id, bank_transaction_id),
    constraint reconciliations_payment_key unique (company_id, payment_id)
);
