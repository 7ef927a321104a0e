use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired state of a Bucket: an AWS S3 bucket, encrypted at rest, reachable over HTTPS only.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "bucketbroker.io",
    version = "v1alpha1",
    kind = "Bucket",
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
    printcolumn = r#"{"name":"Ready","type":"string","description":"The bucket is provisioned and secured","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"description":"Why the bucket is (not) ready","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Region","type":"string","priority":1,"description":"The AWS region","jsonPath":".status.region"}"#,
    printcolumn = r#"{"name":"Deletion","type":"string","priority":1,"description":"What deleting the Bucket does to the AWS bucket","jsonPath":".spec.deletionPolicy"}"#
)]
#[x_kube(validation = Rule::new(
    "has(self.region) == has(oldSelf.region) && (!has(self.region) || self.region == oldSelf.region)"
).message("region is immutable"))]
#[x_kube(validation = Rule::new(
    "!has(oldSelf.className) || (has(self.className) && self.className == oldSelf.className)"
).message("className is immutable once set: delete and re-create the Bucket to change it"))]
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

    /// The BucketClass of this bucket: what the platform team allows it to be. Default: the class annotated
    /// bucketbroker.io/is-default-class: "true", or the controller's built-in default when there is none.
    /// Set once; it cannot be changed after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub class_name: Option<String>,

    /// The AWS region to create the bucket in, for example `eu-west-2`. Defaults to the controller's
    /// region. Cannot be changed after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z0-9-]+$"))]
    pub region: Option<String>,
}

/// What deleting a Bucket does to the AWS bucket.
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

    /// The bucket's ARN, for IAM and bucket policies (`arn:aws:s3:::<bucketName>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,

    /// The HTTPS base URL of the bucket (virtual-hosted style); an object's URL is this plus `/` and its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// For a public bucket, the base URL anyone can download objects from; unset for a private bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The latest observations: `Ready` says whether the bucket is provisioned and secured, and if not, why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
