//! `kubectl bucketbroker`: the kubectl plugin (binary `kubectl-bucketbroker`). Credentials of a binding in
//! one command, a rotation that waits for the new key, who uses a bucket, and what is not Ready.
//!
//! It reads the cluster as the user's kubeconfig says (`--kubeconfig`, `--context`, `--namespace`, as
//! kubectl does) and prints secret values only in `credentials`, whose job that is.

pub mod render;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource, ResourceExt};
use serde_json::json;

use crate::api::{
    Bucket, BucketBinding, BucketClass, BucketServiceKey, CredentialStatus, KeyState, Permissions,
    find_condition,
};
use crate::desired::rotation::{ROTATE_ANNOTATION, parse_duration};
use render::{Format, NotReady};

/// Credentials, key rotation and status of bucket-broker's Buckets, BucketBindings and BucketServiceKeys.
#[derive(Parser, Debug)]
#[command(name = "kubectl-bucketbroker", bin_name = "kubectl bucketbroker", version)]
pub struct Cli {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: Command,
}

/// Which cluster and namespace, as kubectl's flags say.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Target {
    /// The namespace. Default: the namespace of the kubeconfig's context, else `default`.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig file. Default: $KUBECONFIG, else ~/.kube/config.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context. Default: its current context.
    #[arg(long, global = true)]
    pub context: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the credentials of a BucketBinding (or, with --service-key, of a BucketServiceKey), read from
    /// its Secret.
    ///
    /// By default a BucketBinding prints its VCAP_SERVICES (what a Cloud Foundry app reads) and a
    /// BucketServiceKey its cf service-key output. Reading them needs permission to get Secrets.
    Credentials {
        /// The BucketBinding (or BucketServiceKey) name.
        name: String,
        /// Read a BucketServiceKey instead of a BucketBinding.
        #[arg(long)]
        service_key: bool,
        /// vcap: the VCAP_SERVICES value; json: the credentials object; env: KEY=value lines for a shell.
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Rotate the access key of a BucketBinding (or, with --service-key, a BucketServiceKey) now, wait
    /// for the new key and print its id.
    ///
    /// Sets the annotation bucketbroker.io/rotate; the controller issues a new key, writes it to the
    /// Secret and keeps the old one working for the binding's overlap (spec.keyRotation.overlap, 1h by
    /// default) so that pods can pick up the new one.
    Rotate {
        /// The BucketBinding (or BucketServiceKey) name.
        name: String,
        /// Rotate a BucketServiceKey instead of a BucketBinding.
        #[arg(long)]
        service_key: bool,
        /// How long to wait for the new key, for example 30s, 2m or 1h.
        #[arg(long, default_value = "2m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// List the BucketBindings and BucketServiceKeys of a Bucket, with their permissions, keys and state.
    WhoUses {
        /// The Bucket name.
        bucket: String,
        /// table, or json for scripts.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// List everything that is not Ready: Buckets, BucketBindings, BucketServiceKeys of the namespace (or
    /// of all namespaces with -A), and BucketClasses, with the reason and message.
    ///
    /// Exit status: 0 when everything is Ready, 1 otherwise (something is not Ready, or the check failed).
    Status {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// table, or json for scripts.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

/// How lists are printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns, as kubectl prints them.
    Table,
    /// A JSON array, for scripts.
    Json,
}

/// What a command printed, and whether it ends in success (`status` fails when something is not Ready).
#[derive(Debug)]
pub struct Outcome {
    pub stdout: String,
    pub success: bool,
}

impl Outcome {
    fn ok(stdout: String) -> Outcome {
        Outcome { stdout, success: true }
    }
}

/// A failure the user can act on, in full sentences. Never holds a secret value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

/// An API error while doing `action`, with what to do about a refusal.
fn api_error(action: &str, err: kube::Error) -> Error {
    match &err {
        kube::Error::Api(status) if status.is_forbidden() => Error(format!(
            "You are not allowed to {action}: {}. Ask a cluster admin for that permission, or use a \
             kubeconfig context that has it.",
            status.message
        )),
        _ => Error(format!("Could not {action}: {err}.")),
    }
}

/// Runs one command of the plugin against the cluster the kubeconfig names.
pub async fn run(cli: Cli) -> Result<Outcome, Error> {
    let (client, namespace) = connect(&cli.target).await?;
    match cli.command {
        Command::Credentials { name, service_key, format } => {
            credentials(&client, &namespace, &name, service_key, format).await
        }
        Command::Rotate { name, service_key, timeout } => {
            rotate(&client, &namespace, &name, service_key, timeout).await
        }
        Command::WhoUses { bucket, output } => who_uses(&client, &namespace, &bucket, output).await,
        Command::Status { all_namespaces, output } => {
            status(&client, (!all_namespaces).then_some(namespace.as_str()), output).await
        }
    }
}

/// A client and the namespace, from the kubeconfig the way kubectl reads it.
async fn connect(target: &Target) -> Result<(Client, String), Error> {
    let options = KubeConfigOptions { context: target.context.clone(), cluster: None, user: None };
    let config = match &target.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                Error(format!("Could not read the kubeconfig {}: {e}. Check --kubeconfig.", path.display()))
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| {
        Error(format!("Could not load the kubeconfig: {e}. Check --kubeconfig, $KUBECONFIG and --context."))
    })?;
    let namespace = target.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)
        .map_err(|e| Error(format!("Could not make a client from the kubeconfig: {e}.")))?;
    Ok((client, namespace))
}

/// A BucketBinding or a BucketServiceKey, as the commands need it.
struct Credential {
    kind: &'static str,
    name: String,
    namespace: String,
    bucket: String,
    permissions: Permissions,
    service_account: Option<String>,
    /// spec.keyRotation.overlap: how long an old key keeps working.
    overlap: Option<String>,
    generation: Option<i64>,
    status: Option<CredentialStatus>,
}

impl Credential {
    fn from_binding(b: BucketBinding) -> Credential {
        Credential {
            kind: "BucketBinding",
            name: b.name_any(),
            namespace: b.namespace().unwrap_or_default(),
            bucket: b.spec.bucket_ref.name.clone(),
            permissions: b.spec.permissions,
            service_account: b.spec.service_account_name.clone(),
            overlap: b.spec.key_rotation.as_ref().and_then(|r| r.overlap.clone()),
            generation: b.metadata.generation,
            status: b.status,
        }
    }

    fn from_service_key(k: BucketServiceKey) -> Credential {
        Credential {
            kind: "BucketServiceKey",
            name: k.name_any(),
            namespace: k.namespace().unwrap_or_default(),
            bucket: k.spec.bucket_ref.name.clone(),
            permissions: k.spec.permissions,
            service_account: None,
            overlap: k.spec.key_rotation.as_ref().and_then(|r| r.overlap.clone()),
            generation: k.metadata.generation,
            status: k.status,
        }
    }

    fn ready(&self) -> Option<&Condition> {
        self.status.as_ref().and_then(|s| find_condition(&s.conditions, "Ready"))
    }

    fn is_ready(&self) -> bool {
        self.ready().is_some_and(|c| c.status == "True")
    }

    /// "is not Ready (reason: message)", or that the controller never reported on it.
    fn not_ready_text(&self) -> String {
        match self.ready() {
            Some(c) => format!(
                "{} {} is not Ready ({}: {})",
                self.kind,
                self.name,
                c.reason,
                c.message.trim_end_matches('.')
            ),
            None => format!(
                "{} {} has no Ready condition yet: the bucket-broker controller has not reported on it (check \
                 that it is running)",
                self.kind, self.name
            ),
        }
    }

    fn describe_hint(&self) -> String {
        format!("kubectl describe {} {} -n {}", self.kind.to_lowercase(), self.name, self.namespace)
    }

    fn key_id(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| s.access_key_id.as_deref())
    }
}

/// Reads the BucketBinding (or BucketServiceKey) `name`; a clear error when there is none, naming the
/// other kind when an object of that name is one.
async fn get_credential(
    client: &Client,
    namespace: &str,
    name: &str,
    service_key: bool,
) -> Result<Credential, Error> {
    let bindings = Api::<BucketBinding>::namespaced(client.clone(), namespace);
    let keys = Api::<BucketServiceKey>::namespaced(client.clone(), namespace);
    let (kind, found) = if service_key {
        let found = keys.get_opt(name).await.map_err(|e| api_error("read BucketServiceKeys", e))?;
        ("BucketServiceKey", found.map(Credential::from_service_key))
    } else {
        let found = bindings.get_opt(name).await.map_err(|e| api_error("read BucketBindings", e))?;
        ("BucketBinding", found.map(Credential::from_binding))
    };
    if let Some(found) = found {
        return Ok(found);
    }
    let other = if service_key {
        bindings.get_opt(name).await.ok().flatten().map(|_| "It is a BucketBinding: leave out --service-key.")
    } else {
        keys.get_opt(name).await.ok().flatten().map(|_| "It is a BucketServiceKey: add --service-key.")
    };
    let plural = format!("{}s", kind.to_lowercase());
    Err(Error(match other {
        Some(hint) => format!("There is no {kind} {name} in namespace {namespace}. {hint}"),
        None => format!(
            "There is no {kind} {name} in namespace {namespace}. List them with: kubectl get {plural} -n {namespace}"
        ),
    }))
}

async fn credentials(
    client: &Client,
    namespace: &str,
    name: &str,
    service_key: bool,
    format: Option<Format>,
) -> Result<Outcome, Error> {
    let credential = get_credential(client, namespace, name, service_key).await?;
    if !credential.is_ready() {
        return Err(Error(format!(
            "{}: its credentials may not work yet. See: {}",
            credential.not_ready_text(),
            credential.describe_hint()
        )));
    }
    let Some(secret_name) =
        credential.status.as_ref().and_then(|s| s.binding.as_ref()).map(|b| b.name.clone())
    else {
        return Err(Error(format!(
            "{} {name} names no Secret yet (status.binding.name). See: {}",
            credential.kind,
            credential.describe_hint()
        )));
    };
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let secret = secrets
        .get_opt(&secret_name)
        .await
        .map_err(|e| api_error(&format!("read the Secret {secret_name} in namespace {namespace}"), e))?
        .ok_or_else(|| {
            Error(format!(
                "The Secret {secret_name} of {} {name} does not exist: the controller writes it again on its next \
                 pass. Try again in a minute; if it stays missing, see: {}",
                credential.kind,
                credential.describe_hint()
            ))
        })?;
    let data: BTreeMap<String, Vec<u8>> =
        secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    let format = format.unwrap_or(if service_key { Format::Json } else { Format::Vcap });
    let text = render::credentials(&data, format, service_key)
        .map_err(|e| Error(format!("Secret {secret_name}: {e}")))?;
    Ok(Outcome::ok(text))
}

/// Whether the rotation away from `old` is done: a new key id, Ready, at the current generation.
fn rotated(credential: &Credential, old: &str) -> bool {
    credential.key_id().is_some_and(|id| id != old)
        && credential.is_ready()
        && credential.status.as_ref().and_then(|s| s.observed_generation) == credential.generation
}

async fn rotate(
    client: &Client,
    namespace: &str,
    name: &str,
    service_key: bool,
    timeout: Duration,
) -> Result<Outcome, Error> {
    let credential = get_credential(client, namespace, name, service_key).await?;
    if let Some(account) = &credential.service_account {
        return Err(Error(format!(
            "BucketBinding {name} is keyless (spec.serviceAccountName: {account}): its pods assume a role, there \
             is no access key to rotate. Its role's sessions are short-lived and renewed by AWS on their own."
        )));
    }
    let Some(old) = credential.key_id().map(str::to_owned) else {
        return Err(Error(format!(
            "{} has no access key yet, so there is nothing to rotate. {}. See: {}",
            credential.kind,
            credential.not_ready_text(),
            credential.describe_hint()
        )));
    };
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let patch = Patch::Merge(json!({"metadata": {"annotations": {ROTATE_ANNOTATION: stamp.to_string()}}}));
    let params = PatchParams::default();
    let action = format!("annotate {} {name} in namespace {namespace}", credential.kind);
    if service_key {
        Api::<BucketServiceKey>::namespaced(client.clone(), namespace)
            .patch(name, &params, &patch)
            .await
            .map(|_| ())
            .map_err(|e| api_error(&action, e))?;
    } else {
        Api::<BucketBinding>::namespaced(client.clone(), namespace)
            .patch(name, &params, &patch)
            .await
            .map(|_| ())
            .map_err(|e| api_error(&action, e))?;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = get_credential(client, namespace, name, service_key).await?;
        if rotated(&current, &old) {
            let new = current.key_id().unwrap_or_default();
            let keys = current.status.as_ref().map(|s| s.access_keys.as_slice()).unwrap_or_default();
            let retiring = keys.iter().any(|k| k.id == old && k.state == KeyState::Retiring);
            let old_fate = if retiring {
                let overlap = current.overlap.clone().unwrap_or_else(|| "1h".to_owned());
                format!(
                    "keeps working for {overlap} (the overlap), then is deleted: restart the pods that read the \
                     Secret before then"
                )
            } else {
                "is already deleted: restart the pods that read the Secret now".to_owned()
            };
            let secret = current
                .status
                .as_ref()
                .and_then(|s| s.binding.as_ref())
                .map(|b| b.name.as_str())
                .unwrap_or(name);
            return Ok(Outcome::ok(format!(
                "{} {name} rotated: the Secret {secret} now holds access key {new}. The old key {old} {old_fate}.\n",
                current.kind
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            let state = if current.is_ready() {
                format!("{} {name} is Ready", current.kind)
            } else {
                current.not_ready_text()
            };
            return Err(Error(format!(
                "No new access key after {}: {state}, still with key {}. The rotation is requested (annotation \
                 {ROTATE_ANNOTATION}={stamp}) and happens when the controller gets to it; check with: {}",
                render::age(timeout),
                current.key_id().unwrap_or("none"),
                current.describe_hint()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One row of `who-uses`.
#[derive(serde::Serialize, Debug)]
struct User {
    kind: &'static str,
    name: String,
    permissions: String,
    /// `key` or `keyless (ServiceAccount <name>)`.
    access: String,
    #[serde(rename = "accessKeyId", skip_serializing_if = "Option::is_none")]
    access_key_id: Option<String>,
    /// Ages of the keys, the Active one first.
    #[serde(rename = "keyAges")]
    key_ages: Vec<String>,
    ready: String,
    reason: String,
}

fn user_row(c: &Credential, now: SystemTime) -> User {
    let keys = c.status.as_ref().map(|s| s.access_keys.clone()).unwrap_or_default();
    let key_ages = keys
        .iter()
        .map(|k| {
            let created: SystemTime = k.created.0.into();
            let age = render::age(now.duration_since(created).unwrap_or_default());
            match k.state {
                KeyState::Active => age,
                KeyState::Retiring => format!("{age} (retiring)"),
                KeyState::Pending => format!("{age} (pending)"),
            }
        })
        .collect();
    User {
        kind: c.kind,
        name: c.name.clone(),
        permissions: format!("{:?}", c.permissions),
        access: match &c.service_account {
            Some(account) => format!("keyless (ServiceAccount {account})"),
            None => "key".to_owned(),
        },
        access_key_id: c.key_id().map(str::to_owned),
        key_ages,
        ready: c.ready().map(|r| r.status.clone()).unwrap_or_else(|| "Unknown".to_owned()),
        reason: c.ready().map(|r| r.reason.clone()).unwrap_or_default(),
    }
}

async fn who_uses(client: &Client, namespace: &str, bucket: &str, output: Output) -> Result<Outcome, Error> {
    let found = Api::<Bucket>::namespaced(client.clone(), namespace)
        .get_opt(bucket)
        .await
        .map_err(|e| api_error("read Buckets", e))?;
    let bindings = Api::<BucketBinding>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(&format!("list BucketBindings in namespace {namespace}"), e))?;
    let keys = Api::<BucketServiceKey>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(&format!("list BucketServiceKeys in namespace {namespace}"), e))?;
    let now = SystemTime::now();
    let mut users: Vec<User> = bindings
        .items
        .into_iter()
        .map(Credential::from_binding)
        .chain(keys.items.into_iter().map(Credential::from_service_key))
        .filter(|c| c.bucket == bucket)
        .map(|c| user_row(&c, now))
        .collect();
    users.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    if output == Output::Json {
        return Ok(Outcome::ok(format!("{}\n", serde_json::to_string_pretty(&users).unwrap_or_default())));
    }
    let missing = match found {
        Some(_) => String::new(),
        None => format!(
            "There is no Bucket {bucket} in namespace {namespace}; these objects name it and stay not Ready until it \
             exists.\n"
        ),
    };
    if users.is_empty() {
        let text = match found {
            Some(_) => format!(
                "No BucketBinding or BucketServiceKey in namespace {namespace} uses Bucket {bucket}.\n"
            ),
            None => format!(
                "There is no Bucket {bucket} in namespace {namespace}, and nothing names it. List Buckets with: kubectl \
                 get buckets -n {namespace}\n"
            ),
        };
        return Ok(Outcome { stdout: text, success: found.is_some() });
    }
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.kind.to_owned(),
                u.name.clone(),
                u.permissions.clone(),
                u.access.clone(),
                u.access_key_id.clone().unwrap_or_else(|| "-".to_owned()),
                if u.key_ages.is_empty() { "-".to_owned() } else { u.key_ages.join(", ") },
                u.ready.clone(),
                u.reason.clone(),
            ]
        })
        .collect();
    let headers = ["kind", "name", "permissions", "access", "access key", "key age", "ready", "reason"];
    Ok(Outcome::ok(format!("{missing}{}", render::table(&headers, &rows))))
}

/// Lists one kind as JSON objects, in `namespace` or everywhere.
async fn list_json<K: Resource<DynamicType = ()>>(
    client: &Client,
    namespace: Option<&str>,
) -> Result<Vec<serde_json::Value>, Error> {
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let where_ = namespace.map(|ns| format!(" in namespace {ns}")).unwrap_or_default();
    let listed = api
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(&format!("list {}s{where_}", resource.kind), e))?;
    Ok(listed.items.iter().map(|o| serde_json::to_value(o).unwrap_or_default()).collect())
}

async fn status(client: &Client, namespace: Option<&str>, output: Output) -> Result<Outcome, Error> {
    let mut rows: Vec<NotReady> = Vec::new();
    let mut total = 0;
    let kinds = [
        ("Bucket", list_json::<Bucket>(client, namespace).await?),
        ("BucketBinding", list_json::<BucketBinding>(client, namespace).await?),
        ("BucketServiceKey", list_json::<BucketServiceKey>(client, namespace).await?),
    ];
    for (kind, objects) in &kinds {
        total += objects.len();
        rows.extend(objects.iter().filter_map(|o| render::not_ready(kind, o, false)));
    }
    // Classes are the platform's, and a tenant may not list them: they count only when they can be read.
    if let Ok(classes) = list_json::<BucketClass>(client, None).await {
        rows.extend(classes.iter().filter_map(|o| render::not_ready("BucketClass", o, true)));
    }
    let success = rows.is_empty();
    let stdout = match output {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(&rows).unwrap_or_default()),
        Output::Table if success => match namespace {
            Some(ns) => format!("Everything in namespace {ns} is Ready ({total} objects).\n"),
            None => format!("Everything is Ready ({total} objects in all namespaces).\n"),
        },
        Output::Table => {
            let mut headers = vec!["kind", "name", "reason", "message"];
            if namespace.is_none() {
                headers.insert(0, "namespace");
            }
            let table_rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let mut row = vec![r.kind.clone(), r.name.clone(), r.reason.clone(), r.message.clone()];
                    if namespace.is_none() {
                        row.insert(0, r.namespace.clone().unwrap_or_else(|| "-".to_owned()));
                    }
                    row
                })
                .collect();
            render::table(&headers, &table_rows)
        }
    };
    Ok(Outcome { stdout, success })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kubectl_flags_go_anywhere_and_the_timeout_is_a_duration() {
        let cli = Cli::try_parse_from([
            "kubectl-bucketbroker",
            "rotate",
            "app",
            "-n",
            "shop",
            "--context",
            "prod",
            "--timeout",
            "30s",
        ])
        .expect("as expected");
        assert_eq!(cli.target.namespace.as_deref(), Some("shop"));
        assert_eq!(cli.target.context.as_deref(), Some("prod"));
        assert!(matches!(cli.command, Command::Rotate { timeout, .. } if timeout == Duration::from_secs(30)));
        let cli = Cli::try_parse_from(["kubectl-bucketbroker", "status", "-A"]).expect("as expected");
        assert!(matches!(cli.command, Command::Status { all_namespaces: true, output: Output::Table }));
        assert!(
            Cli::try_parse_from(["kubectl-bucketbroker", "rotate", "app", "--timeout", "2 minutes"]).is_err()
        );
    }

    #[test]
    fn status_help_states_the_exit_codes() {
        let mut command = Cli::command();
        let help = command.find_subcommand_mut("status").expect("as expected").render_long_help().to_string();
        assert!(help.contains("0 when everything is Ready, 1 otherwise"), "{help}");
    }

    #[test]
    fn a_refusal_says_what_to_do() {
        let status = kube::core::Status::failure("secrets \"app\" is forbidden", "Forbidden").with_code(403);
        let err = api_error("read the Secret app in namespace shop", kube::Error::Api(Box::new(status)));
        let text = err.to_string();
        assert!(text.starts_with("You are not allowed to read the Secret app in namespace shop"), "{text}");
        assert!(text.contains("Ask a cluster admin"), "{text}");
    }

    fn credential(key: Option<&str>, ready: &str, observed: i64) -> Credential {
        let status: CredentialStatus = serde_json::from_value(json!({
            "accessKeyId": key,
            "observedGeneration": observed,
            "conditions": [{"type": "Ready", "status": ready, "reason": "Provisioned", "message": "ok",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        }))
        .expect("as expected");
        Credential {
            kind: "BucketBinding",
            name: "app".to_owned(),
            namespace: "shop".to_owned(),
            bucket: "data".to_owned(),
            permissions: Permissions::ReadWrite,
            service_account: None,
            overlap: None,
            generation: Some(2),
            status: Some(status),
        }
    }

    #[test]
    fn a_rotation_is_done_with_a_new_key_ready_at_the_current_generation() {
        assert!(rotated(&credential(Some("AKIANEW"), "True", 2), "AKIAOLD"));
        assert!(!rotated(&credential(Some("AKIAOLD"), "True", 2), "AKIAOLD"), "same key");
        assert!(!rotated(&credential(Some("AKIANEW"), "False", 2), "AKIAOLD"), "not Ready");
        assert!(!rotated(&credential(Some("AKIANEW"), "True", 1), "AKIAOLD"), "an older generation");
        assert!(!rotated(&credential(None, "True", 2), "AKIAOLD"), "no key");
    }
}
