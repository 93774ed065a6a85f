//! The mutation registry: the single source of truth for which writes are idempotent.
//!
//! Invariants:
//! - Every mutating route of a service is either a registered operation or explicitly
//!   exempt; [`MutationRouter`] is the only way to mount one, and [`MutationRouter::finish`]
//!   refuses to build a router when a registered operation has no route, a name is
//!   unknown, or a route is mounted twice.
//! - Operation names are unique; they are the `operation` label of every metric and the
//!   operation part of the deterministic id.

use std::collections::HashSet;
use std::time::Duration;

use axum::handler::Handler;
use axum::routing::{get, on, MethodFilter};
use axum::Router;
use http::Method;

/// Financial or high-risk (the metric label `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationType {
    /// Moves or records money.
    Financial,
    /// Changes state whose duplication is costly (customers, access, settings…).
    HighRisk,
}

impl OperationType {
    /// `financial` / `high-risk`.
    pub fn label(self) -> &'static str {
        match self {
            OperationType::Financial => "financial",
            OperationType::HighRisk => "high-risk",
        }
    }
}

/// One registered idempotent operation.
#[derive(Debug, Clone)]
pub struct OperationDef {
    /// Operation name (`createPayment`).
    pub name: &'static str,
    /// Financial or high-risk.
    pub kind: OperationType,
    /// HTTP method.
    pub method: Method,
    /// Route in axum syntax (`/api/invoices/{id}/finalize`).
    pub route: &'static str,
    /// Tables the operation writes (documentation and reports).
    pub tables: &'static [&'static str],
    /// Key TTL for this operation; `None` uses the engine default.
    pub ttl: Option<Duration>,
    /// Whether an empty body without a content type means `{}`.
    pub empty_body_is_empty_object: bool,
}

/// A mutating route deliberately outside the idempotency gate.
#[derive(Debug, Clone)]
pub struct ExemptRoute {
    /// HTTP method.
    pub method: Method,
    /// Route in axum syntax.
    pub route: &'static str,
    /// Why it is exempt.
    pub reason: &'static str,
}

/// The set of registered operations and exempt routes.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    operations: Vec<&'static OperationDef>,
    exempt: Vec<ExemptRoute>,
}

/// Why a registry or router is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mutation registry check failed:\n  - {}", .0.join("\n  - "))]
pub struct RegistryError(pub Vec<String>);

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an operation.
    pub fn operation(mut self, def: &'static OperationDef) -> Self {
        self.operations.push(def);
        self
    }

    /// Declares a mutating route exempt from the gate.
    pub fn exempt(mut self, method: Method, route: &'static str, reason: &'static str) -> Self {
        self.exempt.push(ExemptRoute {
            method,
            route,
            reason,
        });
        self
    }

    /// All registered operations.
    pub fn operations(&self) -> &[&'static OperationDef] {
        &self.operations
    }

    /// All exempt routes.
    pub fn exempt_routes(&self) -> &[ExemptRoute] {
        &self.exempt
    }

    /// Looks an operation up by name.
    pub fn get(&self, name: &str) -> Option<&'static OperationDef> {
        self.operations.iter().copied().find(|d| d.name == name)
    }

    /// Checks the registry on its own: unique names, unique (method, route) pairs.
    pub fn validate(&self) -> Result<(), RegistryError> {
        let mut errors = Vec::new();
        let mut names = HashSet::new();
        let mut routes = HashSet::new();
        for d in &self.operations {
            if !names.insert(d.name) {
                errors.push(format!("operation {} is registered twice", d.name));
            }
            if !routes.insert((d.method.clone(), d.route)) {
                errors.push(format!("{} {} is registered twice", d.method, d.route));
            }
            if !is_mutating(&d.method) {
                errors.push(format!(
                    "operation {} uses {}, which is not a mutating method",
                    d.name, d.method
                ));
            }
        }
        for e in &self.exempt {
            if !routes.insert((e.method.clone(), e.route)) {
                errors.push(format!(
                    "exempt route {} {} is also registered",
                    e.method, e.route
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(RegistryError(errors))
        }
    }
}

fn is_mutating(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn filter(m: &Method) -> MethodFilter {
    MethodFilter::try_from(m.clone()).unwrap_or(MethodFilter::POST)
}

/// Builds a router in which mutating handlers can only be mounted through the registry.
#[derive(Debug)]
pub struct MutationRouter<S> {
    router: Router<S>,
    registry: Registry,
    mounted: HashSet<(Method, String)>,
    errors: Vec<String>,
}

impl<S: Clone + Send + Sync + 'static> MutationRouter<S> {
    /// Starts from an empty router.
    pub fn new(registry: Registry) -> Self {
        let errors = registry.validate().err().map(|e| e.0).unwrap_or_default();
        Self {
            router: Router::new(),
            registry,
            mounted: HashSet::new(),
            errors,
        }
    }

    fn mount(&mut self, method: &Method, route: &str) -> bool {
        if self.mounted.insert((method.clone(), route.to_owned())) {
            true
        } else {
            self.errors
                .push(format!("{method} {route} is mounted twice"));
            false
        }
    }

    /// Mounts the handler of a registered operation at its registered method and route.
    pub fn operation<H, T>(mut self, name: &str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        match self.registry.get(name) {
            Some(def) => {
                if self.mount(&def.method, def.route) {
                    self.router = self
                        .router
                        .route(def.route, on(filter(&def.method), handler));
                }
            }
            None => self.errors.push(format!(
                "a handler is mounted for {name}, which is not a registered operation"
            )),
        }
        self
    }

    /// Mounts an exempt mutating route; it must be declared exempt in the registry.
    pub fn exempt<H, T>(mut self, method: Method, route: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let declared = self
            .registry
            .exempt
            .iter()
            .any(|e| e.method == method && e.route == route);
        if !declared {
            self.errors.push(format!(
                "{method} {route} is a mutating route that is neither registered nor declared exempt"
            ));
        } else if self.mount(&method, route) {
            self.router = self.router.route(route, on(filter(&method), handler));
        }
        self
    }

    /// Mounts a read (`GET`) route.
    pub fn read<H, T>(mut self, route: &str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        if self.mount(&Method::GET, route) {
            self.router = self.router.route(route, get(handler));
        }
        self
    }

    /// Checks that every registered operation and exempt route is mounted, and returns the
    /// router with the registry.
    pub fn finish(mut self) -> Result<(Router<S>, Registry), RegistryError> {
        for d in self.registry.operations() {
            if !self
                .mounted
                .contains(&(d.method.clone(), d.route.to_owned()))
            {
                self.errors.push(format!(
                    "operation {} ({} {}) has no route",
                    d.name, d.method, d.route
                ));
            }
        }
        for e in self.registry.exempt_routes() {
            if !self
                .mounted
                .contains(&(e.method.clone(), e.route.to_owned()))
            {
                self.errors.push(format!(
                    "exempt route {} {} is declared but not mounted",
                    e.method, e.route
                ));
            }
        }
        if self.errors.is_empty() {
            Ok((self.router, self.registry))
        } else {
            Err(RegistryError(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static OP: OperationDef = OperationDef {
        name: "createThing",
        kind: OperationType::HighRisk,
        method: Method::POST,
        route: "/things",
        tables: &["things"],
        ttl: None,
        empty_body_is_empty_object: false,
    };

    async fn h() {}

    #[test]
    fn a_registered_operation_without_a_route_fails_the_build() {
        let err = MutationRouter::<()>::new(Registry::new().operation(&OP))
            .finish()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("createThing (POST /things) has no route"),
            "{err}"
        );
    }

    #[test]
    fn an_unregistered_name_or_undeclared_exempt_route_fails_the_build() {
        let err = MutationRouter::<()>::new(Registry::new().operation(&OP))
            .operation("createThing", h)
            .operation("createOther", h)
            .exempt(Method::POST, "/admin", h)
            .finish()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("createOther, which is not a registered operation"),
            "{text}"
        );
        assert!(
            text.contains(
                "POST /admin is a mutating route that is neither registered nor declared exempt"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_consistent_registry_builds() {
        let registry =
            Registry::new()
                .operation(&OP)
                .exempt(Method::POST, "/admin", "operator bootstrap");
        let built = MutationRouter::<()>::new(registry)
            .operation("createThing", h)
            .exempt(Method::POST, "/admin", h)
            .read("/things", h)
            .finish();
        assert!(built.is_ok());
    }
}
