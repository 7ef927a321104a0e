//! The command line: `bucket-broker run` (the controller), `bucket-broker quickstart` (everything locally;
//! only with the `local` feature) and `bucket-broker crds` (print the CRDs).

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
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
    Run(Box<RunArgs>),
    /// Run everything locally, with no cluster and no AWS account: moto, an in-memory Kubernetes API
    /// server and the controller; apply the examples and show what an app gets.
    #[cfg(feature = "local")]
    Quickstart {
        /// The directory of example manifests to apply.
        #[arg(long, default_value = "examples")]
        examples: PathBuf,
        /// Keep the local API server running until Ctrl-C at the end.
        #[arg(long)]
        keep_running: bool,
    },
    /// Print the CustomResourceDefinitions as a multi-document YAML stream.
    Crds {
        /// Write one file per kind into this directory instead (how `crds/` is regenerated).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
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
