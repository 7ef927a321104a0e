//! bucket-broker: AWS S3 buckets and app-ready, least-privilege credentials from Kubernetes resources.
//!
//! - [`api`]: the custom resources users write (`Bucket`, `BucketBinding`, `BucketServiceKey`).
//! - [`config`]: the controller's flags, parsed and validated in one place.
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
pub mod run;
