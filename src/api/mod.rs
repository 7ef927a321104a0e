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
/// The shape of an AWS region name in every partition: `eu-west-2`, `us-gov-west-1`, `cn-north-1`,
/// `us-iso-east-1`, `us-isob-east-1`, `eu-isoe-west-1`, `us-isof-south-1`, `eusc-de-east-1`. A name of
/// this shape that AWS does not know is reported by the controller (`InvalidSpec`).
pub const REGION_PATTERN: &str = r"^([a-z]{2}(-gov|-iso[a-z]?)?|eusc-[a-z]{2})-[a-z]+-[0-9]{1,2}$";

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
        .map(|mut crd| {
            for version in &mut crd.spec.versions {
                if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
                    unwrap_descriptions(schema);
                }
            }
            crd
        })
        .collect()
}

/// Every description in `schema` as [`unwrapped`] text: schemars keeps the line breaks of `///` comments,
/// and `kubectl explain` would print them where the source wrapped.
fn unwrap_descriptions(
    schema: &mut k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    };
    if let Some(description) = &mut schema.description {
        *description = unwrapped(description);
    }
    let nested = schema.properties.iter_mut().flat_map(|p| p.values_mut());
    let combined =
        [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of].into_iter().flatten().flatten();
    let items: Vec<_> = match &mut schema.items {
        Some(JSONSchemaPropsOrArray::Schema(item)) => vec![item.as_mut()],
        Some(JSONSchemaPropsOrArray::Schemas(items)) => items.iter_mut().collect(),
        None => Vec::new(),
    };
    let additional = match &mut schema.additional_properties {
        Some(JSONSchemaPropsOrBool::Schema(additional)) => Some(additional.as_mut()),
        _ => None,
    };
    for inner in nested.chain(combined).chain(items).chain(additional).chain(schema.not.as_deref_mut()) {
        unwrap_descriptions(inner);
    }
}

/// `text` with the lines of each paragraph joined into one line. Blank lines still separate paragraphs,
/// and a list item (`- `, `* `, `1. `) still starts a line of its own.
pub fn unwrapped(text: &str) -> String {
    let is_item = |line: &str| {
        line.starts_with("- ")
            || line.starts_with("* ")
            || line
                .split_once(". ")
                .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    };
    let mut paragraphs = Vec::new();
    for paragraph in text.split("\n\n") {
        let mut out = String::new();
        for line in paragraph.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !out.is_empty() {
                out.push(if is_item(line) { '\n' } else { ' ' });
            }
            out.push_str(line);
        }
        if !out.is_empty() {
            paragraphs.push(out);
        }
    }
    paragraphs.join("\n\n")
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
