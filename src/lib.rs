//! bucket-broker: AWS S3 buckets and app-ready, least-privilege credentials from Kubernetes resources.
//!
//! - [`api`]: the custom resources users write (`Bucket`, `BucketBinding`, `BucketServiceKey`).
//! - [`desired`]: the desired state, computed without I/O (names, policies, conditions, Secret data).
//! - [`aws`]: the AWS layer (S3, IAM, STS), idempotent operations and errors classified by code.
//! - [`controller`]: one controller per kind, and the credentials logic bindings and service keys share.
//! - [`config`], [`cli`], [`run`], [`http`], [`metrics`], [`leader`]: the binary's flags and wiring.
//! - [`plugin`]: the kubectl plugin `kubectl bucketbroker` (credentials, rotate, who-uses, status).
//! - [`sweeper`]: finds AWS users, keys and buckets whose Kubernetes object is gone.
//! - `local` (cargo feature `local`, on by default, off in the release image): a local environment with no
//!   cluster and no AWS account (the in-memory Kubernetes API server and a moto process), for the tests and
//!   the quickstart.

pub mod api;
pub mod aws;
pub mod cli;
pub mod config;
pub mod controller;
pub mod desired;
pub mod http;
pub mod leader;
#[cfg(feature = "local")]
pub mod local;
pub mod metrics;
pub mod plugin;
pub mod run;
pub mod sweeper;
