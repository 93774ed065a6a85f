//! `accubooks companies create` and `accubooks tokens issue`: what operators did with
//! curl, through the running server's admin API (the operator token from
//! `ACCUBOOKS_ADMIN_TOKEN`).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{operator_token, Api};
use super::output::{fail, Report};

/// Where the server is.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The server (`http://127.0.0.1:8080`).
    #[arg(long, env = "ACCUBOOKS_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
}

/// Company commands.
#[derive(Debug, Subcommand)]
pub enum CompaniesCommand {
    /// Creates a company, its settings and its first admin; prints the admin's token.
    Create {
        /// The company's name.
        name: String,
        /// The first admin's email (default `owner@<company id>`).
        #[arg(long)]
        email: Option<String>,
    },
}

/// Token commands.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Issues a new token for a user who has access to the company (their role stays as
    /// granted: roles change through `POST /api/company/members`).
    Issue {
        /// The company id.
        #[arg(long)]
        company: uuid::Uuid,
        /// The user's email.
        #[arg(long)]
        email: String,
    },
}

fn api(server: &ServerArgs) -> Result<(Api, String), ExitCode> {
    let token = operator_token().map_err(fail)?;
    let api = Api::new(&server.url, 1).map_err(fail)?;
    Ok((api, token))
}

/// Runs `companies create`.
pub async fn companies(server: &ServerArgs, cmd: CompaniesCommand, as_json: bool) -> ExitCode {
    let CompaniesCommand::Create { name, email } = cmd;
    let (api, operator) = match api(server) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match api.create_company(&operator, &name, email.as_deref()).await {
        Ok(v) => {
            let mut r = Report::new(format!("Company {name:?} created"), &["field", "value"]);
            for k in ["company_id", "user_id", "email", "role", "api_token"] {
                r.row(vec![json!(k), v[k].clone()]);
            }
            r.with_json(v).print(as_json)
        }
        Err(e) => fail(e),
    }
}

/// Runs `tokens issue`.
pub async fn tokens(server: &ServerArgs, cmd: TokensCommand, as_json: bool) -> ExitCode {
    let TokensCommand::Issue { company, email } = cmd;
    let (api, operator) = match api(server) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match api
        .issue_token(&operator, &company.hyphenated().to_string(), &email)
        .await
    {
        Ok(v) => {
            let mut r = Report::new(format!("Token for {email}"), &["field", "value"]);
            for k in ["user_id", "role", "api_token"] {
                r.row(vec![json!(k), v[k].clone()]);
            }
            r.with_json(v).print(as_json)
        }
        Err(e) => fail(e),
    }
}
