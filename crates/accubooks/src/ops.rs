//! The mutation registry of AccuBooks: every idempotent operation and every exempt route.

use http::Method;
use idem::{OperationDef, OperationType, Registry};

macro_rules! op {
    ($ident:ident, $name:literal, $kind:ident, $method:ident, $route:literal, [$($table:literal),*]) => {
        op!($ident, $name, $kind, $method, $route, [$($table),*], false);
    };
    ($ident:ident, $name:literal, $kind:ident, $method:ident, $route:literal, [$($table:literal),*], $empty:literal) => {
        #[doc = concat!("`", $name, "`: ", stringify!($method), " ", $route)]
        pub static $ident: OperationDef = OperationDef {
            name: $name,
            kind: OperationType::$kind,
            method: Method::$method,
            route: $route,
            tables: &[$($table),*],
            ttl: None,
            empty_body_is_empty_object: $empty,
        };
    };
}

op!(
    CREATE_CUSTOMER,
    "createCustomer",
    HighRisk,
    POST,
    "/api/customers",
    ["customers"]
);
op!(
    CREATE_EMPLOYEE,
    "createEmployee",
    HighRisk,
    POST,
    "/api/employees",
    ["employees"]
);
op!(
    UPDATE_COMPANY_SETTINGS,
    "updateCompanySettings",
    HighRisk,
    PATCH,
    "/api/company/settings",
    ["company_settings", "settings_versions"]
);
op!(
    GRANT_USER_ACCESS,
    "grantUserAccess",
    HighRisk,
    POST,
    "/api/company/members",
    ["members", "access_grants"]
);

/// The registry: operations and exempt routes.
pub fn registry() -> Registry {
    Registry::new()
        .operation(&CREATE_CUSTOMER)
        .operation(&CREATE_EMPLOYEE)
        .operation(&UPDATE_COMPANY_SETTINGS)
        .operation(&GRANT_USER_ACCESS)
        .exempt(
            Method::POST,
            "/admin/companies",
            "operator bootstrap: creates a tenant and its first token",
        )
        .exempt(
            Method::POST,
            "/admin/companies/{company_id}/tokens",
            "operator action: issues a token",
        )
}
