//! A local environment that needs no cluster and no AWS account: the in-memory Kubernetes API server
//! ([`kube_memory_apiserver`]) and a moto (AWS emulator) process. Used by the integration tests and by
//! the quickstart; compiled only with the `local` feature, so the release image carries neither.

pub mod moto;
pub mod quickstart;

/// Controller settings for the local environment, watching `namespace`. moto serves plain HTTP and
/// applies a conditional Deny as an unconditional one, so there is no TLS-only bucket policy and no
/// platform network here; those documents are tested on their own.
pub fn settings(namespace: &str) -> crate::controller::Settings {
    crate::controller::Settings {
        region: moto::REGION.to_owned(),
        deploy_env: "local".to_owned(),
        cluster_name: String::new(),
        bucket_prefix: "bucket-broker-".to_owned(),
        user_prefix: "bucket-broker-".to_owned(),
        iam_path: "/bucket-broker/".to_owned(),
        network: Default::default(),
        permissions_boundary_arn: None,
        common_user_policy_arn: None,
        require_tls: false,
        account_id: moto::ACCOUNT_ID.to_owned(),
        cluster_uid: String::new(),
        resync_interval: std::time::Duration::from_secs(600),
        key_propagation_timeout: crate::controller::KEY_PROPAGATION_TIMEOUT,
        max_key_age: None,
        concurrency: 4,
        namespace: Some(namespace.to_owned()),
        orphan_sweep_interval: std::time::Duration::from_secs(3600),
        orphan_grace: crate::controller::ORPHAN_GRACE,
        pass_timeout: crate::controller::PASS_TIMEOUT,
        keyless: None,
        keys_allowed: true,
    }
}
