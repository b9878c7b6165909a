//! The `ApiSecurity` config section: TLS and API keys for a service's APIs.
//!
//! Why one section: the two settings go together (a key sent without TLS is readable on
//! the wire), and a service's REST and gRPC listeners share them. Both are off by
//! default, so `make up` keeps plain HTTP on 127.0.0.1; the Helm chart turns both on.
//!
//! ```toml
//! [security]                         # ingress; the pipeline's is [server.security]
//! tls = { cert = "/etc/tls/tls.crt", key = "/etc/tls/tls.key" }
//! api_keys = [{ name = "dashboard", sha256 = "<hex SHA-256 of the key>" }]
//! ```
//!
//! [`ApiSecurity::load`] reads the files and checks the keys once, at start-up, into a
//! [`Security`] that the servers use.

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::Error;
use crate::auth::{ApiKeyEntry, ApiKeys};
use crate::tls::{HttpListener, ServerTls, TlsFiles};

/// TLS and API keys for a service's APIs; both off by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSecurity {
    /// Serve TLS with this certificate and key; plain text when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// Accepted keys (hashed); every request needs one when the list is not empty.
    pub api_keys: Vec<ApiKeyEntry>,
}

impl ApiSecurity {
    /// Reads the TLS files and checks the key list.
    /// The error is [`Error::Tls`] or [`Error::Keys`].
    pub fn load(&self) -> Result<Security, Error> {
        let tls = self.tls.as_ref().map(ServerTls::load).transpose()?;
        let keys = ApiKeys::new(&self.api_keys)?;
        Ok(Security { tls, keys })
    }
}

/// The loaded section: what the servers use.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// The server identity, when TLS is on.
    pub tls: Option<ServerTls>,
    /// The keys; empty when authentication is off.
    pub keys: ApiKeys,
}

impl Security {
    /// An axum listener on `listener`: TLS when configured.
    pub fn http_listener(&self, listener: TcpListener) -> std::io::Result<HttpListener> {
        HttpListener::new(listener, self.tls.as_ref())
    }

    /// A tonic server builder: TLS when configured.
    pub fn grpc_server(&self) -> Result<tonic::transport::Server, tonic::transport::Error> {
        crate::tls::grpc_server(self.tls.as_ref())
    }

    /// `https`/`http` and whether keys are required, for the start-up log line.
    pub fn describe(&self) -> String {
        let scheme = if self.tls.is_some() { "TLS" } else { "plain" };
        if self.keys.is_empty() {
            format!("{scheme}, no API keys")
        } else {
            let names: Vec<&str> = self.keys.names().collect();
            format!("{scheme}, API keys required ({})", names.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default() {
        let security = ApiSecurity::default().load().unwrap();
        assert!(security.tls.is_none());
        assert!(security.keys.is_empty());
        assert_eq!(security.describe(), "plain, no API keys");
    }

    #[test]
    fn errors_name_the_section() {
        let bad_keys = ApiSecurity {
            tls: None,
            api_keys: vec![ApiKeyEntry {
                name: "x".into(),
                sha256: "short".into(),
            }],
        };
        let error = bad_keys.load().unwrap_err().to_string();
        assert!(error.starts_with("security.api_keys[0]"), "{error}");
        let bad_tls = ApiSecurity {
            tls: Some(TlsFiles {
                cert: "/nonexistent.crt".into(),
                key: "/nonexistent.key".into(),
            }),
            api_keys: Vec::new(),
        };
        let error = bad_tls.load().unwrap_err().to_string();
        assert!(error.starts_with("security.tls"), "{error}");
    }
}
