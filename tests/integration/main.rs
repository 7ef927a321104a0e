//! The one integration-test binary: the real controller against a Kubernetes API and an AWS API over HTTP.
