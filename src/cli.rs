//! The command line: `bucket-broker run` (the controller), `bucket-broker quickstart` (everything locally;
//! only with the `local` feature) and `bucket-broker crds` (print the CRDs).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue};
use clap::{CommandFactory, Parser, Subcommand};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use crate::config::RunArgs;

/// Provisions AWS S3 buckets and least-privilege credentials from Kubernetes resources.
#[derive(Parser, Debug)]
#[command(name = "bucket-broker", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller against the cluster of the current kubeconfig or in-cluster config.
    ///
    /// A Bucket that names no BucketClass, while no class is annotated bucketbroker.io/is-default-class:
    /// "true", gets the built-in default class: any region (--region by default), public buckets and
    /// external access allowed, both deletion policies (Delete by default), every namespace, no extra tags.
    /// That is what the controller did before classes existed.
    Run(Box<RunArgs>),
    /// Run everything locally, with no cluster and no AWS account: moto, an in-memory Kubernetes API
    /// server and the controller; apply the examples and show what an app gets.
    #[cfg(feature = "local")]
    Quickstart {
        /// The directory of example manifests to apply.
        #[arg(long, default_value = "examples")]
        examples: PathBuf,
        /// Keep the local API server running until Ctrl-C at the end, for kubectl.
        #[arg(long)]
        keep_running: bool,
        /// Start only moto and the local API server (with the examples applied), keep them up until Ctrl-C,
        /// and print how to run a controller of your own against them.
        #[arg(long)]
        without_controller: bool,
        /// Where the kubeconfig and the controller's log are written.
        #[arg(long, default_value = ".tools/quickstart")]
        state_dir: PathBuf,
    },
    /// Print the CustomResourceDefinitions as a multi-document YAML stream.
    Crds {
        /// Write one file per kind into this directory instead (how `crds/` is regenerated).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

/// Parses the process's command line, or exits with clap's message (naming the environment variable when
/// the bad value came from one).
pub fn parse() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    Cli::try_parse_from(&args)
        .unwrap_or_else(|err| name_env_var(err, &args, |name| std::env::var_os(name)).exit())
}

/// clap reports a bad value under its flag even when it came from the flag's environment variable, which
/// sends people looking for a flag nobody passed. When the flag is absent from `args` and its variable is
/// set (read through `env`), the error names the variable instead.
pub fn name_env_var(
    mut err: clap::Error,
    args: &[OsString],
    env: impl Fn(&str) -> Option<OsString>,
) -> clap::Error {
    let Some(ContextValue::String(invalid)) = err.get(ContextKind::InvalidArg) else {
        return err;
    };
    let Some(long) = invalid.split_whitespace().next().and_then(|f| f.strip_prefix("--")) else {
        return err;
    };
    let command = Cli::command();
    let flag = command
        .get_subcommands()
        .flat_map(|sub| sub.get_arguments())
        .chain(command.get_arguments())
        .find(|a| a.get_long() == Some(long));
    let Some(var) = flag.and_then(|f| f.get_env()).and_then(|v| v.to_str()) else {
        return err;
    };
    let on_command_line = args.iter().filter_map(|a| a.to_str()).any(|a| {
        a.strip_prefix("--")
            .and_then(|a| a.strip_prefix(long))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
    });
    if on_command_line || env(var).is_none() {
        return err;
    }
    let named = format!("{var} (environment variable for --{long})");
    err.insert(ContextKind::InvalidArg, ContextValue::String(named));
    err
}

/// Errors of the `crds` command.
#[derive(Debug, thiserror::Error)]
pub enum CrdsError {
    #[error("cannot render the CRD {name} as YAML")]
    Render {
        name: String,
        #[source]
        source: serde_saphyr::SerializeError,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The file name under `crds/` of a CRD: its kind in lowercase.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.spec.names.kind.to_lowercase())
}

/// One CRD as a YAML document.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, CrdsError> {
    let body = serde_saphyr::to_string(crd).map_err(|source| CrdsError::Render {
        name: crd.metadata.name.clone().unwrap_or_default(),
        source,
    })?;
    Ok(format!("---\n{body}"))
}

/// The CRDs as one multi-document YAML stream: the concatenation of the files in `crds/`.
pub fn crds_yaml() -> Result<String, CrdsError> {
    crate::api::crds().iter().map(crd_yaml).collect()
}

/// Writes one file per CRD into `dir`.
pub fn write_crds(dir: &Path) -> Result<(), CrdsError> {
    for crd in crate::api::crds() {
        let path = dir.join(crd_file_name(&crd));
        std::fs::write(&path, crd_yaml(&crd)?).map_err(|source| CrdsError::Write { path, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crds_match_the_rust_types() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        for crd in crate::api::crds() {
            let path = dir.join(crd_file_name(&crd));
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            let generated = crd_yaml(&crd).expect("renders");
            assert!(
                committed == generated,
                "{} is stale: run `cargo run -- crds --out-dir crds`",
                path.display()
            );
        }
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_bad_value_from_the_environment_names_the_variable() {
        let env = |name: &str| (name == "BUCKET_BROKER_RESYNC_INTERVAL").then(|| OsString::from("10"));
        // What clap reports when the variable holds "10": the same error as for the flag.
        let from_flag = os(&["bucket-broker", "run", "--resync-interval=10"]);
        let err = Cli::try_parse_from(&from_flag).expect_err("10 is not a duration");
        let from_env = os(&["bucket-broker", "run"]);
        let message = name_env_var(err, &from_env, env).to_string();
        assert!(
            message.contains("'BUCKET_BROKER_RESYNC_INTERVAL (environment variable for --resync-interval)'"),
            "{message}"
        );
        assert!(message.contains("not a duration"), "{message}");

        // The flag itself was given: it is the one to name.
        for args in [&from_flag[..], &os(&["bucket-broker", "run", "--resync-interval", "10"])] {
            let err = Cli::try_parse_from(&from_flag).expect_err("10 is not a duration");
            let message = name_env_var(err, args, env).to_string();
            assert!(message.contains("'--resync-interval <RESYNC_INTERVAL>'"), "{message}");
            assert!(!message.contains("BUCKET_BROKER_RESYNC_INTERVAL"), "{message}");
        }
    }

    #[test]
    fn yaml_round_trips_to_the_same_crd() {
        for crd in crate::api::crds() {
            let yaml = crd_yaml(&crd).expect("renders");
            let parsed: CustomResourceDefinition =
                serde_saphyr::from_str(yaml.trim_start_matches("---\n")).expect("parses back");
            assert_eq!(parsed, crd);
        }
    }
}
