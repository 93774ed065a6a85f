//! [`ApiRouter`]: mounting a handler and documenting it are one step.
//!
//! Every handler carries `#[utoipa::path]`; `utoipa_axum::routes!` turns it into its
//! method router, its path item and the schemas it references. The builder mounts the
//! method router through idem's [`MutationRouter`] (which keeps the registry's checks:
//! every registered operation routed, every mutating route registered or exempt, nothing
//! mounted twice) and keeps the path item for the document.
//!
//! Invariants:
//! - A route is documented exactly when it is mounted, at the method and path it is
//!   mounted with (both come from the one attribute).
//! - An operation's attribute names the registered operation (`operation_id`) and states
//!   the registry's method and route, or the router is refused; an exempt route must be
//!   declared exempt; a read must be a `GET`.

use axum::Router;
use idem::registry::RegistryError;
use idem::{MutationRouter, OperationDef, Registry};
use utoipa::openapi::path::{HttpMethod, Operation, PathItem, Paths};
use utoipa::openapi::{RefOr, Schema};
use utoipa_axum::router::UtoipaMethodRouter;

/// One mounted route, as its handler documents it.
#[derive(Clone)]
pub struct Route {
    /// The route template (`/api/invoices/{id}`).
    pub path: String,
    /// Its method.
    pub method: HttpMethod,
    /// The handler's `#[utoipa::path]`.
    pub operation: Operation,
}

/// The documented routes of a built router and the schemas they reference.
#[derive(Clone, Default)]
pub struct Api {
    /// Every mounted route.
    pub routes: Vec<Route>,
    /// The component schemas the handlers' bodies reference.
    pub schemas: Vec<(String, RefOr<Schema>)>,
}

/// Builds the router and the description of its routes together.
pub struct ApiRouter<S> {
    router: MutationRouter<S>,
    registry: Registry,
    api: Api,
    errors: Vec<String>,
}

impl<S: Clone + Send + Sync + 'static> ApiRouter<S> {
    /// Starts from an empty router over `registry`.
    pub fn new(registry: Registry) -> Self {
        Self {
            router: MutationRouter::declared(registry.clone()),
            registry,
            api: Api::default(),
            errors: Vec::new(),
        }
    }

    /// Mounts the handler of a registered operation (`routes!(create_x)`).
    pub fn operation(mut self, routes: UtoipaMethodRouter<S>) -> Self {
        let (schemas, paths, handler) = routes;
        let Some(route) = self.single(paths) else {
            return self;
        };
        let name = route.operation.operation_id.clone().unwrap_or_default();
        let Some(def) = self.registry.get(&name) else {
            self.errors.push(format!(
                "a handler is mounted for {name}, which is not a registered operation"
            ));
            return self;
        };
        if !agrees(def, &route) {
            self.errors.push(format!(
                "{name} is documented at {} {} but registered at {} {}",
                method_name(&route.method),
                route.path,
                def.method(),
                def.route()
            ));
            return self;
        }
        self.router = self.router.operation(def, handler);
        self.keep(route, schemas)
    }

    /// Mounts a mutating route declared exempt in the registry.
    pub fn exempt(mut self, routes: UtoipaMethodRouter<S>) -> Self {
        let (schemas, paths, handler) = routes;
        let Some(route) = self.single(paths) else {
            return self;
        };
        let declared = self
            .registry
            .exempt_routes()
            .iter()
            .find(|e| e.route == route.path && e.method.as_str() == method_name(&route.method));
        match declared {
            Some(e) => {
                let (method, path, reason) = (e.method.clone(), e.route, e.reason);
                self.router = self.router.exempt(method, path, reason, handler);
                self.keep(route, schemas)
            }
            None => {
                self.errors.push(format!(
                    "{} {} is mounted as exempt but not declared exempt in the registry",
                    method_name(&route.method),
                    route.path
                ));
                self
            }
        }
    }

    /// Mounts a read (`GET`) route.
    pub fn read(mut self, routes: UtoipaMethodRouter<S>) -> Self {
        let (schemas, paths, handler) = routes;
        let Some(route) = self.single(paths) else {
            return self;
        };
        if route.method != HttpMethod::Get {
            self.errors.push(format!(
                "{} {} is mounted as a read but is not a GET",
                method_name(&route.method),
                route.path
            ));
            return self;
        }
        self.router = self.router.read(&route.path, handler);
        self.keep(route, schemas)
    }

    /// The router, the registry and the description of every mounted route; refused
    /// when the registry's checks or this builder's fail.
    pub fn finish(self) -> Result<(Router<S>, Registry, Api), RegistryError> {
        let (router, registry) = match self.router.finish() {
            Ok(built) => built,
            Err(RegistryError(mut errors)) => {
                errors.extend(self.errors);
                return Err(RegistryError(errors));
            }
        };
        if self.errors.is_empty() {
            Ok((router, registry, self.api))
        } else {
            Err(RegistryError(self.errors))
        }
    }

    fn keep(mut self, route: Route, schemas: Vec<(String, RefOr<Schema>)>) -> Self {
        self.api.routes.push(route);
        self.api.schemas.extend(schemas);
        self
    }

    /// The one route of `paths` (`routes!` is given one handler at a time here).
    fn single(&mut self, paths: Paths) -> Option<Route> {
        let mut routes: Vec<Route> = paths
            .paths
            .into_iter()
            .flat_map(|(path, item)| operations(item).map(move |(m, op)| (path.clone(), m, op)))
            .map(|(path, method, operation)| Route {
                path,
                method,
                operation,
            })
            .collect();
        match routes.len() {
            1 => routes.pop(),
            n => {
                self.errors
                    .push(format!("one handler per call: got {n} documented routes"));
                None
            }
        }
    }
}

fn operations(item: PathItem) -> impl Iterator<Item = (HttpMethod, Operation)> {
    [
        (HttpMethod::Get, item.get),
        (HttpMethod::Post, item.post),
        (HttpMethod::Put, item.put),
        (HttpMethod::Patch, item.patch),
        (HttpMethod::Delete, item.delete),
        (HttpMethod::Head, item.head),
        (HttpMethod::Options, item.options),
        (HttpMethod::Trace, item.trace),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
}

/// The HTTP name of `m` (`POST`).
fn method_name(m: &HttpMethod) -> &'static str {
    match m {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Head => "HEAD",
        HttpMethod::Options => "OPTIONS",
        HttpMethod::Trace => "TRACE",
    }
}

fn agrees(def: &OperationDef, route: &Route) -> bool {
    def.route() == route.path && def.method().as_str() == method_name(&route.method)
}
