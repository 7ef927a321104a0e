//! The BucketServiceKey controller: credentials for use outside the cluster, in an `Opaque` Secret whose
//! `credentials.json` is what `cf service-key` printed.

use std::collections::BTreeMap;

use super::credentials::CredentialKind;
use crate::api::{AccessSpec, BucketServiceKey, CredentialStatus};
use crate::desired::secret::{self, Credentials};

impl CredentialKind for BucketServiceKey {
    const KIND: &'static str = "BucketServiceKey";
    const FINALIZER: &'static str = "bucketservicekeys.bucketbroker.io/finalizer";
    const SECRET_TYPE: &'static str = "Opaque";

    fn access(&self) -> &AccessSpec {
        &self.spec.0
    }

    fn credential_status(&self) -> Option<&CredentialStatus> {
        self.status.as_ref()
    }

    fn secret_data(_instance_name: &str, credentials: &Credentials<'_>) -> BTreeMap<String, String> {
        secret::service_key_data(credentials)
    }
}
