//! The gRPC connection to the control plane: dials the endpoint (TCP or
//! `unix:/path`) and signs every request with the profile's credentials
//! (`nubis_proto::auth::Signer`).

use std::time::Duration;

use nubis_proto::auth::{Credentials, Signer};
use nubis_proto::compute::v1::admin_client::AdminClient;
use nubis_proto::compute::v1::compute_client::ComputeClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::config::Settings;
use crate::error::CliError;

/// A signed channel.
pub type Signed = InterceptedService<Channel, Signer>;

/// Clients of both services over one connection.
#[derive(Debug, Clone)]
pub struct Client {
    /// Tenant API.
    pub compute: ComputeClient<Signed>,
    /// Operator API.
    pub admin: AdminClient<Signed>,
}

/// How long to try to reach the control plane before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    /// Connects to the endpoint of `settings` with its credentials.
    pub async fn connect(settings: &Settings) -> Result<Self, CliError> {
        let creds = settings.credentials()?;
        let endpoint = settings.endpoint().to_string();
        let tls = settings.client_tls()?;
        let connect = async {
            match &tls {
                Some(tls) => nubis_proto::transport::connect_tls(&endpoint, tls).await,
                None => nubis_proto::transport::connect(&endpoint).await,
            }
        };
        let channel = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(source)) => return Err(CliError::Connect { endpoint, source }),
            Err(_) => {
                return Err(CliError::ConnectTimeout {
                    endpoint,
                    after: CONNECT_TIMEOUT,
                })
            }
        };
        let signer = Signer::new(Credentials::new(
            creds.access_key_id,
            creds.secret_access_key,
        ));
        Ok(Self {
            compute: ComputeClient::with_interceptor(channel.clone(), signer.clone()),
            admin: AdminClient::with_interceptor(channel, signer),
        })
    }
}
