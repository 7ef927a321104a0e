//! A moto server (the AWS emulator from PyPI `moto[server]`) in a child process on 127.0.0.1.
//!
//! The child reads its standard input until it closes and then stops: when this process ends, even by a
//! panic or a kill, the pipe closes and moto goes with it, so no test run leaves a server behind.
//!
//! With [`MotoOptions::enforce_iam`], moto authenticates and authorizes every request after the first
//! three, which make an administrator: tests can then prove what a generated credential may and may not do.

use std::process::Stdio;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_iam::config::Credentials;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The environment variable naming the Python interpreter that has moto installed (set by
/// `scripts/moto-env`); `python3` when unset.
pub const PYTHON_ENV: &str = "BUCKET_BROKER_MOTO_PYTHON";

const LAUNCHER: &str = r#"
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
sys.stdin.read()
server.stop()
"#;

/// The region the local environment uses; not us-east-1, so that location constraints are exercised.
pub const REGION: &str = "eu-west-2";
/// The account moto serves when a request names no other (its default).
pub const ACCOUNT_ID: &str = "123456789012";

/// How to start moto.
#[derive(Clone, Copy, Debug, Default)]
pub struct MotoOptions {
    /// Enforce IAM: authenticate every request and evaluate the caller's IAM policies.
    pub enforce_iam: bool,
}

/// A running moto server.
pub struct Moto {
    child: Child,
    endpoint: String,
    admin: Credentials,
}

/// A failure to start moto.
#[derive(Debug, thiserror::Error)]
pub enum MotoError {
    #[error("cannot start moto with {python} (run scripts/test or scripts/quickstart, which install it)")]
    Spawn {
        python: String,
        #[source]
        source: std::io::Error,
    },
    #[error("moto exited before it was ready (is moto[server] installed for {python}?)")]
    NotReady { python: String },
    #[error("cannot make the moto administrator: {0}")]
    Admin(String),
    #[error("cannot find a free port")]
    Port(#[source] std::io::Error),
}

impl Moto {
    pub async fn start(options: MotoOptions) -> Result<Moto, MotoError> {
        let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".to_owned());
        let port = free_port().map_err(MotoError::Port)?;
        let mut command = Command::new(&python);
        command
            .arg("-c")
            .arg(LAUNCHER)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if options.enforce_iam {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
        }
        let mut child =
            command.spawn().map_err(|source| MotoError::Spawn { python: python.clone(), source })?;
        let stdout = child.stdout.take().ok_or_else(|| MotoError::NotReady { python: python.clone() })?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        if !matches!(ready, Ok(Ok(Some(ref line))) if line == "ready") {
            return Err(MotoError::NotReady { python });
        }
        let endpoint = format!("http://127.0.0.1:{port}");
        let bootstrap = Credentials::new("testing", "testing", None, None, "moto-bootstrap");
        let admin = if options.enforce_iam { make_admin(&endpoint, bootstrap).await? } else { bootstrap };
        Ok(Moto { child, endpoint, admin })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint_url(&self) -> &str {
        &self.endpoint
    }

    /// Credentials allowed to do anything.
    pub fn admin_credentials(&self) -> Credentials {
        self.admin.clone()
    }

    /// The project's AWS clients for this server, signing with the given credentials.
    pub async fn aws(&self, credentials: Credentials) -> crate::aws::Aws {
        let sdk = self.sdk_config(credentials).await;
        crate::aws::Aws::new(&sdk, REGION.to_owned(), Some(self.endpoint.clone()))
    }

    /// An SDK config for this server with the given credentials.
    pub async fn sdk_config(&self, credentials: Credentials) -> aws_config::SdkConfig {
        sdk_config(&self.endpoint, credentials).await
    }

    /// Stops the server and waits for it to exit.
    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

async fn sdk_config(endpoint: &str, credentials: Credentials) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .load()
        .await
}

/// The three unauthenticated requests moto allows: a user, its policy, its key.
async fn make_admin(endpoint: &str, bootstrap: Credentials) -> Result<Credentials, MotoError> {
    let iam = aws_sdk_iam::Client::new(&sdk_config(endpoint, bootstrap).await);
    let fail = |e: &dyn std::fmt::Display| MotoError::Admin(e.to_string());
    iam.create_user()
        .user_name("admin")
        .send()
        .await
        .map_err(|e| fail(&aws_sdk_iam::error::DisplayErrorContext(e)))?;
    let everything =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    iam.put_user_policy()
        .user_name("admin")
        .policy_name("admin")
        .policy_document(everything)
        .send()
        .await
        .map_err(|e| fail(&aws_sdk_iam::error::DisplayErrorContext(e)))?;
    let key = iam
        .create_access_key()
        .user_name("admin")
        .send()
        .await
        .map_err(|e| fail(&aws_sdk_iam::error::DisplayErrorContext(e)))?
        .access_key
        .ok_or_else(|| MotoError::Admin("moto returned no access key".to_owned()))?;
    Ok(Credentials::new(key.access_key_id, key.secret_access_key, None, None, "moto-admin"))
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
