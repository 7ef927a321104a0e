use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `spec.region` may be set or removed only where that leaves the region in effect (status.region, what
/// the controller created the bucket in) as it is: a GitOps tool may pin the default it resolved to.
/// Status writes keep the spec, so they always pass.
const REGION_IMMUTABLE: &str = "has(self.spec.region) == has(oldSelf.spec.region) \
     ? (!has(self.spec.region) || self.spec.region == oldSelf.spec.region) \
     : (has(oldSelf.status) && has(oldSelf.status.region) \
        && (has(self.spec.region) ? self.spec.region : oldSelf.spec.region) == oldSelf.status.region)";
const REGION_MESSAGE: &str = "spec.region is immutable (it may only be set to the region in effect, status.region): \
     delete and re-create the object to change it";

/// A Bucket annotated with this, set to `"true"`, cannot be deleted until the annotation is removed: the
/// ValidatingAdmissionPolicy of `deploy/validatingadmissionpolicy-deletion-protection.yaml` (and of the Helm
/// chart) refuses the DELETE at admission, the Cloud Foundry way (`cf delete-service` refused while in use).
/// The controller itself never reads it: admission enforces it before any deletion starts.
pub const DELETION_PROTECTION_ANNOTATION: &str = "bucketbroker.io/deletion-protection";

/// The desired state of a Bucket: an AWS S3 bucket, encrypted at rest, reachable over HTTPS only.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "bucketbroker.io",
    version = "v1alpha1",
    kind = "Bucket",
    validation = Rule::new(REGION_IMMUTABLE).field_path(".spec.region").message(REGION_MESSAGE),
    namespaced,
    status = "BucketStatus",
    shortname = "bkt",
    category = "bucketbroker",
    doc = "An AWS S3 bucket, private or public-read, encrypted at rest and reachable over HTTPS only. \
           Apps get credentials to it with a BucketBinding; people and tools outside the cluster with a \
           BucketServiceKey. The AWS bucket name is derived from this object's uid and shown in status.bucketName.",
    printcolumn = r#"{"name":"Bucket","type":"string","description":"The AWS bucket name","jsonPath":".status.bucketName"}"#,
    printcolumn = r#"{"name":"Class","type":"string","description":"The BucketClass in effect","jsonPath":".status.class"}"#,
    printcolumn = r#"{"name":"Public","type":"boolean","description":"Objects are readable anonymously","jsonPath":".spec.public"}"#,
    printcolumn = r#"{"name":"Bindings","type":"integer","description":"How many BucketBindings and BucketServiceKeys name this Bucket","jsonPath":".status.bindings"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","description":"The bucket is provisioned and secured","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"description":"Why the bucket is (not) ready","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Region","type":"string","priority":1,"description":"The AWS region","jsonPath":".status.region"}"#,
    printcolumn = r#"{"name":"Deletion","type":"string","priority":1,"description":"What deleting the Bucket does to the AWS bucket","jsonPath":".spec.deletionPolicy"}"#,
    printcolumn = r#"{"name":"Versioning","type":"string","priority":1,"description":"Object versioning as applied","jsonPath":".status.versioning"}"#
)]
#[x_kube(validation = Rule::new(
    "!has(oldSelf.className) || (has(self.className) && self.className == oldSelf.className)"
).field_path(".className").message("spec.className is immutable once set: delete and re-create the object to change it"))]
#[serde(rename_all = "camelCase")]
pub struct BucketSpec {
    /// Makes every object in the bucket readable by anyone with its HTTPS URL (status.publicUrl plus the
    /// object key). Listing the bucket stays private, and writing always needs credentials. Can be changed
    /// at any time, either way. Default false: only holders of a BucketBinding or BucketServiceKey can read.
    #[serde(default)]
    pub public: bool,

    /// What happens to the AWS bucket when this Bucket is deleted. `Delete` deletes the AWS bucket, but
    /// only once it is empty: a bucket that still holds objects is never deleted, and this Bucket waits
    /// with Ready=False, reason DeletionBlocked. `Retain` leaves the AWS bucket and its data untouched in
    /// AWS. Default: the class's deletionPolicy, itself `Delete` by default. The class may allow only some
    /// policies. Can be changed while the Bucket is being deleted: switching a blocked Bucket to `Retain`
    /// releases it and keeps the AWS bucket with its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// CORS rules, for web pages on other sites that read or write this bucket from the browser. Only when
    /// the class allows it (allowCORS). Empty: no cross-origin requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub cors: Vec<CorsRule>,

    /// Object versioning, when the class leaves it to the Bucket (versioning: TenantChoice): `Enabled`
    /// keeps every overwritten or deleted version; `Suspended` keeps no new ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioning: Option<BucketVersioning>,

    /// Deletes objects this many days after they were written. At most the class's
    /// lifecycle.maxObjectExpirationDays. Default: objects are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub expire_objects_after_days: Option<i32>,

    /// The BucketClass of this bucket: what the platform team allows it to be. Default: the class annotated
    /// bucketbroker.io/is-default-class: "true", or the controller's built-in default when there is none.
    /// Set once; it cannot be changed after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub class_name: Option<String>,

    /// The AWS region to create the bucket in, for example `eu-west-2`. Defaults to the region of the
    /// Bucket's class, then the controller's. Cannot be changed after creation; it may be set to the region
    /// in effect (status.region), as a GitOps tool pinning the default does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = super::REGION_PATTERN))]
    pub region: Option<String>,
}

/// One CORS rule: which web origins may make which requests.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CorsRule {
    /// Origins allowed, such as `https://app.example.com` (one `*` wildcard allowed).
    #[schemars(length(min = 1, max = 100))]
    pub allowed_origins: Vec<String>,
    /// HTTP methods allowed.
    #[schemars(length(min = 1))]
    pub allowed_methods: Vec<CorsMethod>,
    /// Request headers a browser may send (`*` allows any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    /// Response headers a page may read, such as `ETag`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache the answer to its preflight request, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub max_age_seconds: Option<i32>,
}

/// An HTTP method a CORS rule allows.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum CorsMethod {
    GET,
    PUT,
    POST,
    DELETE,
    HEAD,
}

/// A Bucket's own versioning, when its class leaves it to the Bucket.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketVersioning {
    Enabled,
    Suspended,
}

// What deleting a Bucket does to the AWS bucket. (A plain comment: a type's doc comment would replace the
// description of the optional fields of this type in the schema, and `kubectl explain` would lose them.)
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Delete the AWS bucket once it is empty; never delete data.
    #[default]
    Delete,
    /// Leave the AWS bucket and its data in place.
    Retain,
}

/// The observed state of a Bucket.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BucketStatus {
    /// The AWS bucket name, derived from this object's uid. For information: the controller takes names
    /// from the uid and from the bucket's ownership tag in AWS, never from this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_name: Option<String>,

    /// The AWS region the bucket lives in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,

    /// The BucketClass in effect: spec.className, or the default class it was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,

    /// Object versioning as applied: `Enabled` or `Suspended`; unset while never enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioning: Option<String>,

    /// The bucket's ARN, for IAM and bucket policies (`arn:aws:s3:::<bucketName>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,

    /// The HTTPS base URL of the bucket (virtual-hosted style); an object's URL is this plus `/` and its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// For a public bucket, the base URL anyone can download objects from; unset for a private bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,

    /// How many BucketBindings and BucketServiceKeys in this namespace name this Bucket, those being deleted
    /// included until they are gone. `kubectl bucketbroker who-uses` lists them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bindings: Option<i32>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The latest observations: `Ready` says whether the bucket is provisioned and secured, and if not, why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
