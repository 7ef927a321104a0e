use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::DeletionPolicy;

/// The annotation that makes a BucketClass the default, as for StorageClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "bucketbroker.io/is-default-class";

/// What a platform team allows the buckets of this class to be, and what they always get.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "bucketbroker.io",
    version = "v1alpha1",
    kind = "BucketClass",
    shortname = "bkc",
    category = "bucketbroker",
    doc = "A kind of bucket a platform team offers, as a StorageClass is a kind of volume: the region, what \
           the bucket may be (public, with CORS, reachable from outside the platform network), its deletion \
           policies, the tags it carries and the namespaces that may use it. A Bucket names its class in \
           spec.className; a Bucket without one gets the class annotated bucketbroker.io/is-default-class: \
           \"true\", or, when there is none, the controller's built-in default. Written by platform admins; \
           tenants may only read it.",
    printcolumn = r#"{"name":"Region","type":"string","description":"The region of its buckets","jsonPath":".spec.region"}"#,
    printcolumn = r#"{"name":"Public","type":"boolean","description":"Its buckets may be public","jsonPath":".spec.allowPublic"}"#,
    printcolumn = r#"{"name":"External","type":"boolean","description":"Credentials may work from outside the platform network","jsonPath":".spec.allowExternalAccess"}"#,
    printcolumn = r#"{"name":"Default","type":"string","description":"The class of Buckets that name none","jsonPath":".metadata.annotations.bucketbroker\\.io/is-default-class"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(
    "!has(self.deletionPolicy) || !has(self.allowedDeletionPolicies) || self.deletionPolicy in self.allowedDeletionPolicies"
).message("deletionPolicy must be one of allowedDeletionPolicies"))]
#[serde(rename_all = "camelCase")]
pub struct BucketClassSpec {
    /// The AWS region of this class's buckets, for example `eu-west-2`. A Bucket that asks for another
    /// region is refused. Default: the controller's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = super::REGION_PATTERN))]
    pub region: Option<String>,

    /// Whether a Bucket of this class may be public (spec.public: true). Default false. When a class stops
    /// allowing it, its public buckets are made private at their next reconcile, and say so.
    #[serde(default)]
    pub allow_public: bool,

    /// Whether the credentials of this class's buckets may work from outside the platform network
    /// (allowExternalAccess: true on a BucketBinding or BucketServiceKey). Default false. When a class stops
    /// allowing it, existing credentials are confined to the platform network at their next reconcile.
    #[serde(default)]
    pub allow_external_access: bool,

    /// Whether the credentials of this class's buckets must be keyless: a BucketBinding must name its app's
    /// ServiceAccount (serviceAccountName) and gets a role, never an access key; a BucketBinding without
    /// one, and a BucketServiceKey, are refused with the reason KeysNotAllowed. Default false. Existing
    /// keyed credentials of a class that starts requiring it are revoked at their next reconcile.
    #[serde(default)]
    pub require_keyless: bool,

    /// How the class's buckets are encrypted at rest. Default: SSE-S3 (keys managed by S3). With SSE-KMS and
    /// the platform's own key, the credentials of these buckets get exactly kms:GenerateDataKey and
    /// kms:Decrypt on that key, through S3 only. Changing the key re-encrypts nothing: new objects use the
    /// new key, existing ones keep theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<ClassEncryption>,

    /// Object versioning of the class's buckets: `Enabled` (every overwrite and delete keeps the previous
    /// version), `Suspended`, `Disabled` (never turned on; the default), or `TenantChoice` (each Bucket
    /// decides with spec.versioning). S3 cannot turn versioning off once enabled: it can only be suspended,
    /// so under `Disabled` a bucket found versioned (chosen under TenantChoice, say) is suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioning: Option<ClassVersioning>,

    /// Lifecycle rules every bucket of the class gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<ClassLifecycle>,

    /// Whether a Bucket of this class may set its own CORS rules (spec.cors), for browsers on other sites.
    /// Default false: the class's buckets then have no CORS rules, and rules found on one (set under an
    /// earlier class, or by an app with its credentials) are removed at its next reconcile.
    #[serde(default, rename = "allowCORS")]
    pub allow_cors: bool,

    /// The deletion policy of a Bucket of this class that sets none. Default `Delete` (the AWS bucket is
    /// deleted once it is empty; data is never deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// The deletion policies a Bucket of this class may ask for. Default: both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub allowed_deletion_policies: Option<Vec<DeletionPolicy>>,

    /// Tags added to every AWS bucket and IAM user of this class, for cost allocation (for example
    /// `cost-centre: "42"`). Keys and values as AWS allows them; the controller's own tags (bucketbroker.io/*,
    /// created_by, deploy_env) cannot be set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20))]
    #[x_kube(validation = Rule::new(
        "self.all(k, !k.startsWith('bucketbroker.io/') && k != 'created_by' && k != 'deploy_env' && !k.startsWith('aws:') && size(k) <= 128 && size(self[k]) <= 256)"
    ).message("tags cannot use the controller's keys (bucketbroker.io/*, created_by, deploy_env) or aws:, and are at most 128 characters (keys) and 256 (values)"))]
    pub tags: BTreeMap<String, String>,

    /// Which namespaces may use this class, by their labels. Default: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// How a class's buckets are encrypted at rest.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("self.type != 'SSE-KMS' || has(self.kmsKeyArn)").message("SSE-KMS needs kmsKeyArn"))]
#[x_kube(validation = Rule::new("self.type == 'SSE-KMS' || !has(self.kmsKeyArn)").message("kmsKeyArn is for SSE-KMS only"))]
#[serde(rename_all = "camelCase")]
pub struct ClassEncryption {
    /// `SSE-S3` (the default): keys managed by S3. `SSE-KMS`: the platform's KMS key, kmsKeyArn.
    #[serde(default, rename = "type")]
    pub type_: EncryptionType,
    /// The ARN of the KMS key, for SSE-KMS: `arn:aws:kms:<region>:<account>:key/<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$"))]
    pub kms_key_arn: Option<String>,
    /// With SSE-KMS, an S3 Bucket Key: far fewer calls to KMS (and a lower KMS bill). Default true.
    #[serde(default = "default_true")]
    pub bucket_key_enabled: bool,
}

fn default_true() -> bool {
    true
}

/// The kind of encryption at rest.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EncryptionType {
    #[default]
    #[serde(rename = "SSE-S3")]
    SseS3,
    #[serde(rename = "SSE-KMS")]
    SseKms,
}

/// A class's versioning.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassVersioning {
    Enabled,
    Suspended,
    Disabled,
    TenantChoice,
}

/// Lifecycle rules of a class's buckets; days count from an object's creation (or its replacement).
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClassLifecycle {
    /// Old versions (replaced or deleted, with versioning) are deleted this many days after they became old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub noncurrent_version_expiration_days: Option<i32>,
    /// Multipart uploads never completed are aborted (their parts deleted) this many days after they
    /// started. Default 7.
    #[serde(default = "default_abort_days")]
    #[schemars(range(min = 1, max = 36500))]
    pub abort_incomplete_multipart_upload_days: i32,
    /// The longest a Bucket of the class may keep objects with spec.expireObjectsAfterDays. Default: no
    /// ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub max_object_expiration_days: Option<i32>,
}

fn default_abort_days() -> i32 {
    7
}

impl BucketClassSpec {
    /// The deletion policies a Bucket of this class may ask for.
    pub fn allows_deletion_policy(&self, policy: DeletionPolicy) -> bool {
        self.allowed_deletion_policies.as_ref().is_none_or(|allowed| allowed.contains(&policy))
    }
}
