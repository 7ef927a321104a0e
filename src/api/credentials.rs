use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a BucketBinding or a BucketServiceKey asks for: access to one Bucket in the same namespace.
///
/// Both kinds share this spec (they differ only in the Secret they write), so it is defined once and
/// wrapped by each kind's transparent spec type.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("self.bucketRef == oldSelf.bucketRef").message("bucketRef is immutable"))]
#[x_kube(validation = Rule::new(
    "has(self.secretName) == has(oldSelf.secretName) && (!has(self.secretName) || self.secretName == oldSelf.secretName)"
).message("secretName is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct AccessSpec {
    /// The Bucket, in this namespace, to get credentials for. Cannot be changed after creation.
    pub bucket_ref: BucketRef,

    /// What the credentials may do. `ReadWrite` (the default): download, upload, delete and list objects,
    /// and read and write the bucket's CORS configuration. `ReadOnly`: download and list objects, and read
    /// the CORS configuration. Can be changed at any time; the access key stays the same.
    #[serde(default)]
    pub permissions: Permissions,

    /// Allows the credentials to be used from outside the platform network (a laptop, another cloud, a
    /// browser following a presigned URL). Default false: requests from outside the platform network are
    /// denied. Can be changed at any time.
    #[serde(default)]
    pub allow_external_access: bool,

    /// The name of the Secret to write the credentials to, in this namespace. Defaults to this object's
    /// name. Cannot be changed after creation. An existing Secret not created for this object is never
    /// overwritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,
}

/// A reference to a Bucket in the same namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketRef {
    /// The name of the Bucket.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The access a credential grants on its bucket (the seed's `read-write` and `read-only`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Permissions {
    /// Read, write, delete and list objects; read and write the bucket's CORS configuration.
    #[default]
    ReadWrite,
    /// Read and list objects; read the bucket's CORS configuration.
    ReadOnly,
}

/// Credentials for an app in the cluster: what `cf bind-service` gave a Cloud Foundry app.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "bucketbroker.io",
    version = "v1alpha1",
    kind = "BucketBinding",
    namespaced,
    status = "CredentialStatus",
    shortname = "bkb",
    category = "bucketbroker",
    doc = "Credentials for an app in the cluster to use a Bucket: a dedicated IAM user with a least-privilege \
           policy on that bucket alone and one access key, written to a Secret (status.binding.name) whose \
           VCAP_SERVICES entry is what Cloud Foundry apps already parse, plus AWS_* keys for envFrom and \
           servicebinding.io files. Deleting it revokes the credentials; the bucket and its data stay.",
    printcolumn = r#"{"name":"Bucket","type":"string","description":"The Bucket these credentials are for","jsonPath":".spec.bucketRef.name"}"#,
    printcolumn = r#"{"name":"Permissions","type":"string","jsonPath":".spec.permissions"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","description":"The Secret holding the credentials","jsonPath":".status.binding.name"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"description":"Why the credentials are (not) ready","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"External","type":"boolean","priority":1,"description":"Usable from outside the platform network","jsonPath":".spec.allowExternalAccess"}"#,
    printcolumn = r#"{"name":"User","type":"string","priority":1,"description":"The IAM user","jsonPath":".status.userName"}"#
)]
#[serde(transparent)]
pub struct BucketBindingSpec(pub AccessSpec);

/// Credentials for use outside the cluster: what `cf create-service-key` gave.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "bucketbroker.io",
    version = "v1alpha1",
    kind = "BucketServiceKey",
    namespaced,
    status = "CredentialStatus",
    shortname = "bsk",
    category = "bucketbroker",
    doc = "Credentials to a Bucket for people and tools outside the cluster (the Cloud Foundry service key): \
           a dedicated IAM user with a least-privilege policy on that bucket alone and one access key, \
           written to an Opaque Secret (status.binding.name) as credentials.json. Set allowExternalAccess to \
           use them from outside the platform network. Deleting it revokes the credentials.",
    printcolumn = r#"{"name":"Bucket","type":"string","description":"The Bucket these credentials are for","jsonPath":".spec.bucketRef.name"}"#,
    printcolumn = r#"{"name":"Permissions","type":"string","jsonPath":".spec.permissions"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","description":"The Secret holding the credentials","jsonPath":".status.binding.name"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"description":"Why the credentials are (not) ready","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"External","type":"boolean","priority":1,"description":"Usable from outside the platform network","jsonPath":".spec.allowExternalAccess"}"#,
    printcolumn = r#"{"name":"User","type":"string","priority":1,"description":"The IAM user","jsonPath":".status.userName"}"#
)]
#[serde(transparent)]
pub struct BucketServiceKeySpec(pub AccessSpec);

impl std::ops::Deref for BucketBindingSpec {
    type Target = AccessSpec;
    fn deref(&self) -> &AccessSpec {
        &self.0
    }
}

impl std::ops::Deref for BucketServiceKeySpec {
    type Target = AccessSpec;
    fn deref(&self) -> &AccessSpec {
        &self.0
    }
}

/// The observed state of a BucketBinding or BucketServiceKey.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialStatus {
    /// The Secret holding the credentials, once written. Its presence makes this object a servicebinding.io
    /// provisioned service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<SecretRef>,

    /// The IAM user holding the credentials, derived from this object's uid. Set before the user is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,

    /// The IAM user's ARN: what a bucket policy in another AWS account names to let these credentials copy
    /// data there (for example when migrating with `aws s3 sync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_arn: Option<String>,

    /// The id of the live access key (not a secret; the secret key is only in the Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The latest observations: `Ready` (the Secret holds working credentials) and `NetworkRestricted`
    /// (the credentials only work from the platform network).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretRef {
    /// The name of the Secret.
    pub name: String,
}
