//! The gRPC connection to the control plane: dials the endpoint (TCP or
//! `unix:/path`) and signs every request with the profile's credentials
//! (`nubis_proto::auth::Signed`: the signature covers the request body).

use std::time::Duration;

use nubis_proto::auth::Credentials;
use nubis_proto::autoscaling::v1::auto_scaling_client::AutoScalingClient;
use nubis_proto::billing::v1::billing_client::BillingClient;
use nubis_proto::compute::v1::admin_client::AdminClient;
use nubis_proto::compute::v1::compute_client::ComputeClient;
use nubis_proto::vpc::v1::networking_client::NetworkingClient;
use tonic::transport::Channel;

use crate::config::Settings;
use crate::error::CliError;

/// A signed channel.
pub type Signed = nubis_proto::auth::SignedChannel;

/// Clients of every service over one connection.
#[derive(Debug, Clone)]
pub struct Client {
    /// Tenant API.
    pub compute: ComputeClient<Signed>,
    /// Operator API.
    pub admin: AdminClient<Signed>,
    /// Usage and invoices.
    pub billing: BillingClient<Signed>,
    /// VPCs, subnets and security groups.
    pub networking: NetworkingClient<Signed>,
    /// Auto Scaling groups and launch templates.
    pub autoscaling: AutoScalingClient<Signed>,
}

/// How long to try to reach the control plane before giving up (shared by
/// the endpoints of a list, each getting at least [`MIN_PER_ENDPOINT`]).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest time given to one endpoint of a list.
const MIN_PER_ENDPOINT: Duration = Duration::from_secs(2);

impl Client {
    /// Connects to the endpoint of `settings` with its credentials. With
    /// several endpoints (a comma-separated list) they are dialled in turn and
    /// the first that accepts the connection serves the command; the error
    /// of the last one is returned when none does.
    pub async fn connect(settings: &Settings) -> Result<Self, CliError> {
        let creds = settings.credentials()?;
        let tls = settings.client_tls()?;
        let endpoints = settings.endpoints();
        let per_endpoint = (CONNECT_TIMEOUT / endpoints.len().max(1) as u32).max(MIN_PER_ENDPOINT);
        let mut last = None;
        let mut channel = None;
        for endpoint in endpoints {
            match dial(endpoint, tls.as_ref(), per_endpoint).await {
                Ok(c) => {
                    channel = Some(c);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let channel = match (channel, last) {
            (Some(c), _) => c,
            (None, Some(e)) => return Err(e),
            (None, None) => {
                return Err(CliError::BadEndpoint {
                    endpoint: settings.endpoint().to_string(),
                })
            }
        };
        let signed = nubis_proto::auth::Signed::new(
            channel,
            Credentials::new(creds.access_key_id, creds.secret_access_key),
        );
        Ok(Self {
            compute: ComputeClient::new(signed.clone()),
            admin: AdminClient::new(signed.clone()),
            billing: BillingClient::new(signed.clone()),
            networking: NetworkingClient::new(signed.clone()),
            autoscaling: AutoScalingClient::new(signed),
        })
    }
}

/// Dials one endpoint within `timeout`.
async fn dial(
    endpoint: &str,
    tls: Option<&nubis_proto::transport::ClientTls>,
    timeout: Duration,
) -> Result<Channel, CliError> {
    let connect = async {
        match tls {
            Some(tls) if endpoint.starts_with("https://") => {
                nubis_proto::transport::connect_tls(endpoint, tls).await
            }
            _ => nubis_proto::transport::connect(endpoint).await,
        }
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(source)) => Err(CliError::Connect {
            endpoint: endpoint.to_string(),
            source,
        }),
        Err(_) => Err(CliError::ConnectTimeout {
            endpoint: endpoint.to_string(),
            after: timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{resolve_with, ConfigFile, Flags};

    fn settings(endpoint: &str) -> Settings {
        let flags = Flags {
            endpoint: Some(endpoint.to_string()),
            access_key_id: Some("NKIATEST".into()),
            secret_access_key: Some("secret".into()),
            ..Flags::default()
        };
        resolve_with(&flags, &|_| None, &ConfigFile::default(), "c".into()).unwrap()
    }

    /// A port nobody listens on (bound, then released).
    fn dead_endpoint() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }

    #[tokio::test]
    async fn a_dead_first_endpoint_fails_over_to_the_next() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_ep = format!("http://{}", live.local_addr().unwrap());
        // Accept connections (an HTTP/2 handshake is not needed for the
        // channel to connect: tonic connects at the TCP level).
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = live.accept().await {
                held.push(s);
            }
        });
        let dead = dead_endpoint();
        let s = settings(&format!("{dead},{live_ep}"));
        Client::connect(&s).await.expect("second endpoint serves");

        let err = Client::connect(&settings(&format!("{dead},{}", dead_endpoint())))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                CliError::Connect { .. } | CliError::ConnectTimeout { .. }
            ),
            "{err:?}"
        );
    }
}
