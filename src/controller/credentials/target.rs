//! The AWS bucket a credential is for, and the proof (from AWS, never from status) that it is its Bucket's.

use crate::api::{Bucket, Permissions};
use crate::controller::{Context, Error};
use crate::desired::names::{self, Owner};

/// The AWS bucket a credential is for. Its name comes from the Bucket's uid, or from the Bucket's status
/// (a bucket made under an earlier prefix); either way, no access is granted until AWS shows the bucket
/// carries the Bucket's uid tag ([`verify_bucket`]). ARNs are built from the name, never read.
pub(super) struct Target {
    pub(super) bucket_uid: String,
    pub(super) bucket_name: String,
    pub(super) region: String,
    pub(super) bucket_arn: String,
    /// The credential works from outside the platform network: it asks to, and the Bucket's class allows it.
    pub(super) external_access: bool,
    /// The platform's KMS key the bucket is encrypted with (its class's SSE-KMS), which the credential uses.
    pub(super) kms_key: Option<String>,
    /// The cost-allocation tags of the Bucket's class, for the IAM user too.
    pub(super) class_tags: Vec<(String, String)>,
}

impl Target {
    pub(super) fn of(bucket: &Bucket, ctx: &Context) -> Result<Self, Error> {
        let uid = Owner::of("Bucket", &bucket.metadata).map_err(Error::Incomplete)?.uid;
        let status = bucket.status.as_ref();
        let bucket_name = status
            .and_then(|s| s.bucket_name.clone())
            .unwrap_or_else(|| names::bucket_name(&ctx.settings.bucket_prefix, uid));
        // The region decides no access: a wrong one only makes this credential's own calls fail.
        let region = status
            .and_then(|s| s.region.clone())
            .or_else(|| bucket.spec.region.clone())
            .unwrap_or_else(|| ctx.settings.region.clone());
        let bucket_arn = names::bucket_arn(names::partition(&region), &bucket_name);
        Ok(Target {
            bucket_uid: uid.to_owned(),
            bucket_name,
            region,
            bucket_arn,
            external_access: false,
            kms_key: None,
            class_tags: Vec::new(),
        })
    }

    /// What a policy for this target grants, for events: "ReadOnly access to bucket B from anywhere".
    pub(super) fn grant(&self, permissions: Permissions, ctx: &Context) -> String {
        let from = if self.external_access {
            " from anywhere (allowExternalAccess)"
        } else if ctx.settings.network.is_configured() {
            " from the platform network only"
        } else {
            ""
        };
        format!("{permissions:?} access to bucket {}{from}", self.bucket_name)
    }
}

/// Checks with AWS that the target bucket is the Bucket's, before any policy grants access to it.
pub(super) async fn verify_bucket(ctx: &Context, target: &Target, bucket_ref: &str) -> Result<(), Error> {
    let ops = ctx.bucket_ops(&target.region, &target.bucket_name);
    let derived = names::bucket_name(&ctx.settings.bucket_prefix, &target.bucket_uid);
    let tags = ops.tags().await?;
    let untagged = tags.as_deref().is_some_and(|tags| {
        names::ownership(tags, &target.bucket_uid, &ctx.settings.cluster()) == names::Ownership::Untagged
    });
    if untagged && !ops.in_account().await? {
        return Err(Error::BucketUnverified(format!(
            "the AWS bucket {} of Bucket {bucket_ref} is not this account's; no access is granted",
            target.bucket_name
        )));
    }
    match tags {
        None => Err(Error::BucketUnverified(format!(
            "the AWS bucket {} of Bucket {bucket_ref} does not exist yet; no access is granted",
            target.bucket_name
        ))),
        Some(tags)
            if names::may_manage(
                &tags,
                &target.bucket_uid,
                &ctx.settings.cluster(),
                &target.bucket_name,
                &derived,
            ) =>
        {
            Ok(())
        }
        Some(_) => Err(Error::BucketUnverified(format!(
            "the AWS bucket {} named in Bucket {bucket_ref}'s status does not belong to that Bucket; no access is granted",
            target.bucket_name
        ))),
    }
}
