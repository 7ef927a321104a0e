//! The user-facing API: group `bucketbroker.io`, version `v1alpha1`.
//!
//! A cluster-scoped [`BucketClass`] is what platform teams allow a bucket to be. Three namespaced kinds: a
//! [`Bucket`] is an S3 bucket; a [`BucketBinding`] (for apps in the cluster) and a
//! [`BucketServiceKey`] (for use outside it) are credentials to one Bucket, delivered in a Secret. The doc
//! comments on every field are what `kubectl explain` shows, so they are written for the user.

mod bucket;
mod class;
mod credentials;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

pub use bucket::{
    Bucket, BucketSpec, BucketStatus, BucketVersioning, CorsMethod, CorsRule, DELETION_PROTECTION_ANNOTATION,
    DeletionPolicy,
};
pub use class::{
    BucketClass, BucketClassSpec, ClassEncryption, ClassLifecycle, ClassVersioning, DEFAULT_CLASS_ANNOTATION,
    EncryptionType,
};
pub use credentials::{
    AccessKeyStatus, AccessSpec, BucketBinding, BucketBindingSpec, BucketRef, BucketServiceKey,
    BucketServiceKeySpec, CredentialStatus, KeyRotation, KeyRotationStatus, KeyState, Permissions, SecretRef,
};

/// The API group of every bucket-broker kind.
pub const GROUP: &str = "bucketbroker.io";
/// The single served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `kubectl get bucketbroker` lists all three kinds.
pub const CATEGORY: &str = "bucketbroker";

/// Reads a condition of the given type from a status' condition list.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The four CRDs, in the order a cluster admin applies them.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    [BucketClass::crd(), Bucket::crd(), BucketBinding::crd(), BucketServiceKey::crd()]
        .into_iter()
        .map(with_new_status)
        .collect()
}

/// A new object's status is `{observedGeneration: 0}`, which the API server fills in from the schema's
/// default as soon as the object exists: "no generation handled yet". Without it a new object would have
/// no status at all until the controller's first write, and kstatus (Flux, kpt) reads an object without
/// status as Current, so a GitOps sync waiting for health would move on before the credentials exist.
fn with_new_status(
    mut crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON;
    for version in &mut crd.spec.versions {
        let properties = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut());
        if let Some(status) = properties.and_then(|p| p.get_mut("status")) {
            status.default = Some(JSON(serde_json::json!({"observedGeneration": 0})));
        }
    }
    crd
}

#[cfg(test)]
mod tests;
