//! The BucketBinding controller: credentials for an app, in a `servicebinding.io/s3` Secret whose
//! `VCAP_SERVICES` is the Cloud Foundry shape.

use std::collections::BTreeMap;

use super::credentials::CredentialKind;
use crate::api::{AccessSpec, BucketBinding, CredentialStatus};
use crate::desired::secret::{self, Credentials};

impl CredentialKind for BucketBinding {
    const KIND: &'static str = "BucketBinding";
    const FINALIZER: &'static str = "bucketbindings.bucketbroker.io/finalizer";
    const SECRET_TYPE: &'static str = secret::BINDING_SECRET_TYPE;

    fn access(&self) -> &AccessSpec {
        &self.spec.access
    }

    fn credential_status(&self) -> Option<&CredentialStatus> {
        self.status.as_ref()
    }

    fn secret_data(instance_name: &str, credentials: &Credentials<'_>) -> BTreeMap<String, String> {
        secret::binding_data(instance_name, credentials)
    }

    fn app(&self) -> Option<&str> {
        self.spec.app.as_deref()
    }

    const KEYLESS: bool = true;

    fn service_account(&self) -> Option<&str> {
        self.spec.service_account_name.as_deref()
    }
}
