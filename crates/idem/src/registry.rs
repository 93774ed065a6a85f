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
use axum::{Extension, Router};
use http::Method;

/// One registered idempotent operation: its name, the route it is mounted at, and how
/// its writes are labelled and kept.
///
/// Defined as a `static` with the `const` builder, and mounted by reference:
///
/// ```
/// use idem::OperationDef;
///
/// static CREATE_NOTE: OperationDef = OperationDef::post("createNote", "/notes")
///     .kind("high-risk")
///     .tables(&["notes"]);
/// assert_eq!(CREATE_NOTE.route(), "/notes");
/// ```
#[derive(Debug, Clone)]
pub struct OperationDef {
    name: &'static str,
    kind: &'static str,
    method: Method,
    route: &'static str,
    tables: &'static [&'static str],
    ttl: Option<Duration>,
    empty_body_is_empty_object: bool,
}

impl OperationDef {
    /// An operation named `name` (`createPayment`: the `operation` label of its metrics
    /// and part of its keys' scope), served at `method` and `route` (axum syntax,
    /// `/api/invoices/{id}/finalize`).
    pub const fn new(name: &'static str, method: Method, route: &'static str) -> Self {
        Self {
            name,
            kind: "write",
            method,
            route,
            tables: &[],
            ttl: None,
            empty_body_is_empty_object: false,
        }
    }

    /// A `POST` operation.
    pub const fn post(name: &'static str, route: &'static str) -> Self {
        Self::new(name, Method::POST, route)
    }

    /// The kind of write, the `type` label of its metrics (`financial`, `high-risk`; the
    /// service chooses its own kinds). Default `write`.
    pub const fn kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    /// The tables the operation writes (for documentation and reports).
    pub const fn tables(mut self, tables: &'static [&'static str]) -> Self {
        self.tables = tables;
        self
    }

    /// How long this operation's completed keys count, instead of the engine's default.
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Accepts an empty body without a content type as `{}` (for actions that take no
    /// input, like `POST /invoices/{id}/finalize`).
    pub const fn empty_body_is_empty_object(mut self) -> Self {
        self.empty_body_is_empty_object = true;
        self
    }

    /// The operation name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The kind of write (the metric label `type`).
    pub const fn kind_label(&self) -> &'static str {
        self.kind
    }

    /// The HTTP method.
    pub const fn method(&self) -> &Method {
        &self.method
    }

    /// The route, in axum syntax.
    pub const fn route(&self) -> &'static str {
        self.route
    }

    /// The tables the operation writes.
    pub const fn written_tables(&self) -> &'static [&'static str] {
        self.tables
    }

    /// The operation's own key TTL, if it has one.
    pub const fn key_ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// Whether an empty body without a content type means `{}`.
    pub const fn accepts_empty_body(&self) -> bool {
        self.empty_body_is_empty_object
    }
}

/// A mutating route deliberately outside the idempotency gate.
#[derive(Debug, Clone)]
#[non_exhaustive]
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

/// The operation a route was mounted for, in its requests' extensions: how
/// [`Write`](crate::Write) knows which operation it runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mounted(pub(crate) &'static OperationDef);

/// Builds a router in which mutating handlers can only be mounted as operations or as
/// routes deliberately exempt from the gate.
///
/// [`MutationRouter::new`] registers whatever is mounted; [`MutationRouter::declared`]
/// checks the routes against a registry kept elsewhere (a service's single list of its
/// writes), and then [`finish`](MutationRouter::finish) refuses a registered operation
/// without a route, a route for an operation not registered, and an undeclared exempt
/// route. Both refuse a route mounted twice.
#[derive(Debug)]
pub struct MutationRouter<S> {
    router: Router<S>,
    declared: Option<Registry>,
    registry: Registry,
    mounted: HashSet<(Method, String)>,
    errors: Vec<String>,
}

impl<S: Clone + Send + Sync + 'static> Default for MutationRouter<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> MutationRouter<S> {
    /// An empty router whose operations are the ones mounted on it.
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            declared: None,
            registry: Registry::new(),
            mounted: HashSet::new(),
            errors: Vec::new(),
        }
    }

    /// An empty router that must mount exactly the operations and exempt routes of
    /// `registry`.
    pub fn declared(registry: Registry) -> Self {
        let errors = registry.validate().err().map(|e| e.0).unwrap_or_default();
        Self {
            declared: Some(registry),
            errors,
            ..Self::new()
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

    /// Mounts the handler of `def` at its method and route. The handler runs the write
    /// through the [`Write`](crate::Write) extractor, which knows `def` from the route.
    pub fn operation<H, T>(mut self, def: &'static OperationDef, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        if let Some(declared) = &self.declared {
            match declared.get(def.name) {
                Some(d) if d.method == def.method && d.route == def.route => {}
                Some(d) => {
                    self.errors.push(format!(
                        "{} is mounted at {} {} but registered at {} {}",
                        def.name, def.method, def.route, d.method, d.route
                    ));
                    return self;
                }
                None => {
                    self.errors.push(format!(
                        "a handler is mounted for {}, which is not a registered operation",
                        def.name
                    ));
                    return self;
                }
            }
        }
        if self.mount(&def.method, def.route) {
            self.registry = std::mem::take(&mut self.registry).operation(def);
            let route = on(filter(&def.method), handler).layer(Extension(Mounted(def)));
            self.router = self.router.route(def.route, route);
        }
        self
    }

    /// Mounts a mutating route outside the gate; with a declared registry, it must be
    /// declared exempt there.
    pub fn exempt<H, T>(
        mut self,
        method: Method,
        route: &'static str,
        reason: &'static str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let undeclared = self.declared.as_ref().is_some_and(|d| {
            !d.exempt
                .iter()
                .any(|e| e.method == method && e.route == route)
        });
        if undeclared {
            self.errors.push(format!(
                "{method} {route} is a mutating route that is neither registered nor declared exempt"
            ));
        } else if self.mount(&method, route) {
            self.registry =
                std::mem::take(&mut self.registry).exempt(method.clone(), route, reason);
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

    /// The router and the registry of what it mounts; refused when a check failed.
    pub fn finish(mut self) -> Result<(Router<S>, Registry), RegistryError> {
        let registry = match self.declared.take() {
            Some(declared) => {
                for d in declared.operations() {
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
                for e in declared.exempt_routes() {
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
                declared
            }
            None => self.registry,
        };
        if self.errors.is_empty() {
            Ok((self.router, registry))
        } else {
            Err(RegistryError(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static OP: OperationDef = OperationDef::post("createThing", "/things").tables(&["things"]);
    static OTHER: OperationDef = OperationDef::post("createOther", "/others");

    async fn h() {}

    #[test]
    fn a_declared_operation_without_a_route_fails_the_build() {
        let err = MutationRouter::<()>::declared(Registry::new().operation(&OP))
            .finish()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("createThing (POST /things) has no route"),
            "{err}"
        );
    }

    #[test]
    fn an_undeclared_operation_or_exempt_route_fails_the_build() {
        let err = MutationRouter::<()>::declared(Registry::new().operation(&OP))
            .operation(&OP, h)
            .operation(&OTHER, h)
            .exempt(Method::POST, "/admin", "bootstrap", h)
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
    fn a_route_mounted_twice_fails_the_build() {
        let err = MutationRouter::<()>::new()
            .operation(&OP, h)
            .exempt(Method::POST, "/things", "again", h)
            .finish()
            .unwrap_err();
        assert!(
            err.to_string().contains("POST /things is mounted twice"),
            "{err}"
        );
    }

    #[test]
    fn a_consistent_router_builds_and_registers_what_it_mounts() {
        let registry =
            Registry::new()
                .operation(&OP)
                .exempt(Method::POST, "/admin", "operator bootstrap");
        let built = MutationRouter::<()>::declared(registry)
            .operation(&OP, h)
            .exempt(Method::POST, "/admin", "operator bootstrap", h)
            .read("/things", h)
            .finish();
        assert!(built.is_ok());

        let (_, registry) = MutationRouter::<()>::new()
            .operation(&OP, h)
            .operation(&OTHER, h)
            .finish()
            .unwrap();
        let names: Vec<_> = registry.operations().iter().map(|d| d.name()).collect();
        assert_eq!(names, ["createThing", "createOther"]);
    }
}
