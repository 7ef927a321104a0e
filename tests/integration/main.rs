//! The one integration-test binary: the real controller against a Kubernetes API and an AWS API over HTTP.
//!
//! Kubernetes is the cluster named by `BUCKET_BROKER_TEST_KUBECONFIG` when set (CRDs applied from
//! `crds/`, one namespace per test), otherwise the project's in-memory API server. AWS is a moto server
//! per test, started by the harness.

mod account;
mod apps;
mod bucket;
mod classes;
mod credentials;
mod deploy;
mod eks;
mod features;
mod gitops;
mod harness;
mod helm;
mod hostile;
mod image;
mod keyless;
mod kubectl;
mod operations;
mod orphans;
mod platform;
mod plugin;
mod protection;
mod proxy;
mod quickstart;
mod rotation;
mod scale;
mod smoke;
mod trust;
