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
    #[schemars(regex(pattern = r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]$"))]
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

impl BucketClassSpec {
    /// The deletion policies a Bucket of this class may ask for.
    pub fn allows_deletion_policy(&self, policy: DeletionPolicy) -> bool {
        self.allowed_deletion_policies.as_ref().is_none_or(|allowed| allowed.contains(&policy))
    }
}
