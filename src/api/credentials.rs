use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The refusal of a change to `spec.bucketRef`.
const BUCKET_REF_IMMUTABLE: &str =
    "spec.bucketRef is immutable: delete and re-create the object to change it";

/// `spec.secretName` may be changed only to the name already in effect: a GitOps tool may pin the default
/// (this object's own name), or drop a value equal to it.
const SECRET_NAME_IMMUTABLE: &str = "(has(self.spec.secretName) ? self.spec.secretName : self.metadata.name) == \
     (has(oldSelf.spec.secretName) ? oldSelf.spec.secretName : oldSelf.metadata.name)";
const SECRET_NAME_MESSAGE: &str = "spec.secretName is immutable (it may only be set to the Secret name in effect, \
     which defaults to the object's own name): delete and re-create the object to change it";

/// What a BucketBinding or a BucketServiceKey asks for: access to one Bucket in the same namespace.
///
/// Both kinds share this spec (they differ only in the Secret they write), so it is defined once and
/// wrapped by each kind's transparent spec type.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessSpec {
    /// The Bucket, in this namespace, to get credentials for. Cannot be changed after creation.
    #[x_kube(validation = Rule::new("self == oldSelf").message(BUCKET_REF_IMMUTABLE))]
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
    /// name. Cannot be changed after creation; it may be set to the name in effect (this object's name
    /// when it had none), as a GitOps tool pinning the default does. An existing Secret not created for
    /// this object is never overwritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,

    /// Rotates the access key on a schedule, with an overlap during which the old key keeps working. The
    /// annotation `bucketbroker.io/rotate` set to a new value rotates once, now. The platform's maximum key
    /// age applies even without this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rotation: Option<KeyRotation>,
}

/// When access keys are replaced.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeyRotation {
    /// Rotate keys older than this, for example `90d`, `12h` or `30m` (units s, m, h, d). The platform's
    /// maximum key age is the ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h|d)$"))]
    pub interval: Option<String>,
    /// How long the old key keeps working after the Secret holds the new one, so that pods can pick it up
    /// (default `1h`). Then it is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h|d)$"))]
    pub overlap: Option<String>,
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
#[derive(CustomResource, Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new(
    "has(self.serviceAccountName) == has(oldSelf.serviceAccountName) && (!has(self.serviceAccountName) || self.serviceAccountName == oldSelf.serviceAccountName)"
).field_path(".serviceAccountName").message("spec.serviceAccountName is immutable (moving between keys and a ServiceAccount's role is a new BucketBinding): delete and re-create the object to change it"))]
#[x_kube(validation = Rule::new("!has(self.serviceAccountName) || !has(self.keyRotation)")
    .message("keyRotation rotates access keys, and a binding with serviceAccountName has none: remove one of them"))]
#[kube(
    group = "bucketbroker.io",
    version = "v1alpha1",
    kind = "BucketBinding",
    validation = Rule::new(SECRET_NAME_IMMUTABLE).field_path(".spec.secretName").message(SECRET_NAME_MESSAGE),
    namespaced,
    status = "CredentialStatus",
    shortname = "bkb",
    category = "bucketbroker",
    doc = "Credentials for an app in the cluster to use a Bucket: a dedicated IAM user with a least-privilege \
           policy on that bucket alone and one access key (or, with serviceAccountName, no key: a role the \
           app's ServiceAccount assumes), written to a Secret (status.binding.name) whose VCAP_SERVICES entry \
           is what Cloud Foundry apps already parse, plus AWS_* keys for envFrom and servicebinding.io files. \
           Deleting it revokes the credentials; the bucket and its data stay.",
    printcolumn = r#"{"name":"Bucket","type":"string","description":"The Bucket these credentials are for","jsonPath":".spec.bucketRef.name"}"#,
    printcolumn = r#"{"name":"Permissions","type":"string","jsonPath":".spec.permissions"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","description":"The Secret holding the credentials","jsonPath":".status.binding.name"}"#,
    printcolumn = r#"{"name":"App","type":"string","description":"The app whose shared <app>-vcap-services Secret lists this binding","jsonPath":".spec.app"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"description":"Why the credentials are (not) ready","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"External","type":"boolean","priority":1,"description":"Usable from outside the platform network","jsonPath":".spec.allowExternalAccess"}"#,
    printcolumn = r#"{"name":"User","type":"string","priority":1,"description":"The IAM user","jsonPath":".status.userName"}"#,
    printcolumn = r#"{"name":"ServiceAccount","type":"string","priority":1,"description":"The ServiceAccount whose role holds the access (keyless)","jsonPath":".spec.serviceAccountName"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BucketBindingSpec {
    #[serde(flatten)]
    pub access: AccessSpec,
    /// The app this binding is for, when the app uses several buckets (as a Cloud Foundry app bound to
    /// several services did). Bindings in this namespace with the same app also share the Secret
    /// `<app>-vcap-services`, whose one key `VCAP_SERVICES` lists every one of them, as `VCAP_SERVICES` did
    /// on Cloud Foundry. The binding's own Secret is written as well. Can be changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 240), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub app: Option<String>,

    /// Keyless: the app's ServiceAccount, in this namespace. Instead of an IAM user and an access key, the
    /// ServiceAccount gets an IAM role with this binding's permissions, which its pods assume through IRSA
    /// or EKS Pod Identity (whichever the platform set up); the Secret then holds the role's ARN and no
    /// key. The ServiceAccount may be created before or after this binding. Several bindings may name the
    /// same ServiceAccount: its one role gets each binding's access. Cannot be added, changed or removed
    /// after creation: to move an app between keys and a role, create a new BucketBinding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub service_account_name: Option<String>,
}

/// Credentials for use outside the cluster: what `cf create-service-key` gave.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "bucketbroker.io",
    version = "v1alpha1",
    kind = "BucketServiceKey",
    validation = Rule::new(SECRET_NAME_IMMUTABLE).field_path(".spec.secretName").message(SECRET_NAME_MESSAGE),
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
        &self.access
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

    /// The IAM user holding the credentials, derived from this object's uid. For information: the
    /// controller takes names from the uid and from the user's ownership tag in AWS, never from this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,

    /// The IAM user's ARN: what a bucket policy in another AWS account names to let these credentials copy
    /// data there (for example when migrating with `aws s3 sync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_arn: Option<String>,

    /// The IAM role holding the access of a keyless binding: its ServiceAccount's role, named from the
    /// ServiceAccount's uid. For information, like userName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_name: Option<String>,

    /// The ARN of that role: what the ServiceAccount's pods assume, and what a bucket policy in another
    /// AWS account names to let them copy data there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,

    /// The shared Secret `<app>-vcap-services` listing this binding with the other bindings of its app
    /// (BucketBinding with spec.app only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_secret_name: Option<String>,
    /// The user's access keys (never a secret): the Active one is in the Secret; a Retiring one still works
    /// until its overlap ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_keys: Vec<AccessKeyStatus>,
    /// When the key was last rotated and when it will be next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rotation: Option<KeyRotationStatus>,
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

/// One access key of the user.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct AccessKeyStatus {
    /// The access key id.
    pub id: String,
    /// When AWS created it.
    pub created: Time,
    /// `Active` (in the Secret), `Retiring` (replaced, still working until its overlap ends) or `Pending` (a
    /// rotation's new key, which the Secret gets once AWS accepts it).
    pub state: KeyState,
}

/// Where a key stands: in the Secret, replaced, or about to be.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// The key in the Secret.
    Active,
    /// A replaced key, working until its overlap ends.
    Retiring,
    /// A rotation's new key, not yet accepted by AWS (new keys can take a while to work everywhere): the
    /// Secret switches to it once it is, and the Active key becomes Retiring then.
    Pending,
}

/// The rotation schedule.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRotationStatus {
    /// When the key in the Secret was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Time>,
    /// When it is next rotated by age (none without an interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Time>,
    /// The value of the bucketbroker.io/rotate annotation that the last rotation answered (a digest of it
    /// when it is longer than 64 characters). While the annotation holds another value, a rotation is still
    /// to come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<String>,
}

/// A reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretRef {
    /// The name of the Secret.
    pub name: String,
}
