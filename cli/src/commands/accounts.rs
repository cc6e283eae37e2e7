//! `nubis admin accounts create|list|disable|enable|delete` and
//! `nubis admin accounts keys create|list|delete` (rotation and revocation).

use nubis_proto::compute::v1 as pb;
use serde::Serialize;

use super::Ctx;
use crate::cli::{AccessKeysCmd, AccountsCmd};
use crate::client::Client;
use crate::error::CliError;
use crate::output::{emit, render_list, render_record, rfc3339_ms, Format, Tabular};

/// An account.
#[derive(Debug, Serialize)]
pub struct AccountView {
    /// Account id (12 digits).
    pub account_id: String,
    /// Name.
    pub name: String,
    /// Creation time.
    pub created: String,
    /// Access key ids.
    pub access_key_ids: Vec<String>,
    /// Disabled by the operator.
    pub disabled: bool,
}

impl Tabular for AccountView {
    fn headers() -> &'static [&'static str] {
        &["ACCOUNT_ID", "NAME", "CREATED", "ACCESS_KEYS", "DISABLED"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.account_id.clone(),
            self.name.clone(),
            self.created.clone(),
            self.access_key_ids.join(","),
            self.disabled.to_string(),
        ]
    }
}

impl From<pb::Account> for AccountView {
    fn from(a: pb::Account) -> Self {
        Self {
            account_id: a.account_id,
            name: a.name,
            created: rfc3339_ms(a.created_unix_ms),
            access_key_ids: a.access_key_ids,
            disabled: a.disabled,
        }
    }
}

/// `admin accounts create`: the new account and its only copy of the secret.
#[derive(Debug, Serialize)]
pub struct NewAccountView {
    /// Account id.
    pub account_id: String,
    /// Name.
    pub name: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret (shown only once).
    pub secret_access_key: String,
}

/// `admin accounts keys create`: the new key and its only copy of the secret.
#[derive(Debug, Serialize)]
pub struct NewKeyView {
    /// Account id.
    pub account_id: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret (shown only once).
    pub secret_access_key: String,
}

/// An access key (never its secret).
#[derive(Debug, Serialize)]
pub struct KeyView {
    /// Access key id.
    pub access_key_id: String,
    /// Creation time.
    pub created: String,
}

impl Tabular for KeyView {
    fn headers() -> &'static [&'static str] {
        &["ACCESS_KEY_ID", "CREATED"]
    }
    fn row(&self) -> Vec<String> {
        vec![self.access_key_id.clone(), self.created.clone()]
    }
}

/// Runs an `admin accounts` subcommand.
pub async fn run(ctx: &Ctx, client: &mut Client, cmd: AccountsCmd) -> Result<(), CliError> {
    match cmd {
        AccountsCmd::Create { name } => {
            let resp = client
                .admin
                .create_account(pb::CreateAccountRequest { name })
                .await?
                .into_inner();
            let account = resp.account.unwrap_or_default();
            if ctx.format == Format::Table {
                eprintln!(
                    "created account {}; its secret access key is shown only this once",
                    account.account_id
                );
            }
            emit(&render_record(
                ctx.format,
                &NewAccountView {
                    account_id: account.account_id,
                    name: account.name,
                    access_key_id: resp.access_key_id,
                    secret_access_key: resp.secret_access_key,
                },
            )?)
        }
        AccountsCmd::List => {
            let resp = client
                .admin
                .list_accounts(pb::ListAccountsRequest {})
                .await?
                .into_inner();
            let views: Vec<AccountView> =
                resp.accounts.into_iter().map(AccountView::from).collect();
            emit(&render_list(ctx.format, "accounts", &views)?)
        }
        AccountsCmd::Disable { account_id } => set_disabled(client, account_id, true).await,
        AccountsCmd::Enable { account_id } => set_disabled(client, account_id, false).await,
        AccountsCmd::Delete { account_id } => {
            client
                .admin
                .delete_account(pb::DeleteAccountRequest {
                    account_id: account_id.clone(),
                })
                .await?;
            eprintln!("deleted account {account_id}");
            Ok(())
        }
        AccountsCmd::Keys(AccessKeysCmd::Create { account_id }) => {
            let resp = client
                .admin
                .create_access_key(pb::CreateAccessKeyRequest {
                    account_id: account_id.clone(),
                })
                .await?
                .into_inner();
            if ctx.format == Format::Table {
                eprintln!(
                    "created access key {}; its secret is shown only this once",
                    resp.access_key_id
                );
            }
            emit(&render_record(
                ctx.format,
                &NewKeyView {
                    account_id,
                    access_key_id: resp.access_key_id,
                    secret_access_key: resp.secret_access_key,
                },
            )?)
        }
        AccountsCmd::Keys(AccessKeysCmd::List { account_id }) => {
            let resp = client
                .admin
                .list_access_keys(pb::ListAccessKeysRequest { account_id })
                .await?
                .into_inner();
            let views: Vec<KeyView> = resp
                .access_keys
                .into_iter()
                .map(|k| KeyView {
                    access_key_id: k.access_key_id,
                    created: rfc3339_ms(k.created_unix_ms),
                })
                .collect();
            emit(&render_list(ctx.format, "access_keys", &views)?)
        }
        AccountsCmd::Keys(AccessKeysCmd::Delete { access_key_id }) => {
            client
                .admin
                .delete_access_key(pb::DeleteAccessKeyRequest {
                    access_key_id: access_key_id.clone(),
                })
                .await?;
            eprintln!("revoked access key {access_key_id}");
            Ok(())
        }
    }
}

async fn set_disabled(
    client: &mut Client,
    account_id: String,
    disabled: bool,
) -> Result<(), CliError> {
    client
        .admin
        .set_account_disabled(pb::SetAccountDisabledRequest {
            account_id: account_id.clone(),
            disabled,
        })
        .await?;
    let what = if disabled { "disabled" } else { "enabled" };
    eprintln!("{what} account {account_id}");
    Ok(())
}
