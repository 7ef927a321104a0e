//! AWS names, ARNs, URLs and tags. Names come from the Kubernetes uid, never from user-chosen names, so a
//! re-created object can never take over someone else's bucket or IAM user.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Tag keys written on every AWS object; the uid tag is checked before any delete or adoption.
pub mod tag {
    pub const NAMESPACE: &str = "bucketbroker.io/namespace";
    pub const NAME: &str = "bucketbroker.io/name";
    pub const UID: &str = "bucketbroker.io/uid";
    pub const KIND: &str = "bucketbroker.io/kind";
    pub const CREATED_BY: &str = "created_by";
    pub const DEPLOY_ENV: &str = "deploy_env";
    /// The `--cluster-name` of the controller that made the object (absent when it has none).
    pub const CLUSTER: &str = "bucketbroker.io/cluster";
    /// The uid of the `kube-system` namespace of the cluster whose controller made the object.
    pub const CLUSTER_UID: &str = "bucketbroker.io/cluster-uid";
    /// On a bucket released by `deletionPolicy: Retain`: when it was released (RFC 3339). Such a bucket
    /// is no orphan: its data was kept on purpose.
    pub const RELEASED: &str = "bucketbroker.io/released";
    /// The value of [`CREATED_BY`].
    pub const CREATED_BY_VALUE: &str = "bucket-broker";
}

/// The AWS bucket name of a Bucket.
pub fn bucket_name(prefix: &str, uid: &str) -> String {
    format!("{prefix}{}", uid.to_ascii_lowercase())
}

/// The IAM user name of a BucketBinding or BucketServiceKey.
pub fn user_name(prefix: &str, uid: &str) -> String {
    format!("{prefix}{uid}")
}

/// The IAM role name of a ServiceAccount (keyless bindings): the ServiceAccount owns the role, since IRSA
/// lets a ServiceAccount name one role, whatever number of bindings name it.
pub fn role_name(prefix: &str, service_account_uid: &str) -> String {
    format!("{prefix}{service_account_uid}")
}

/// The AWS partition a region belongs to (`aws`, `aws-cn`, `aws-us-gov`).
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The regions of every AWS partition this controller version knows (the AWS SDKs' endpoint list of its
/// time). Only used to tell a region AWS does not have from a network failure once a call to it failed: a
/// region newer than this list works like any other.
pub const KNOWN_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-isoe-west-1",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eusc-de-east-1",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-iso-east-1",
    "us-iso-west-1",
    "us-isob-east-1",
    "us-isob-west-1",
    "us-isof-east-1",
    "us-isof-south-1",
    "us-west-1",
    "us-west-2",
];

/// Whether `region` is one of [`KNOWN_REGIONS`].
pub fn is_known_region(region: &str) -> bool {
    KNOWN_REGIONS.contains(&region)
}

/// `arn:<partition>:s3:::<bucket>`.
pub fn bucket_arn(partition: &str, bucket: &str) -> String {
    format!("arn:{partition}:s3:::{bucket}")
}

/// The HTTPS base URL of a bucket: virtual-hosted style on AWS, path style on a custom endpoint (local
/// emulators and most S3-compatible stores do not resolve bucket subdomains).
pub fn bucket_endpoint(bucket: &str, region: &str, custom_endpoint: Option<&str>) -> String {
    match custom_endpoint {
        Some(endpoint) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        None => {
            let suffix = if partition(region) == "aws-cn" { "amazonaws.com.cn" } else { "amazonaws.com" };
            format!("https://{bucket}.s3.{region}.{suffix}")
        }
    }
}

/// Identifies the Kubernetes object behind an AWS object, for its tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner<'a> {
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

impl<'a> Owner<'a> {
    /// The owner described by a stored object's metadata; the error names the field it lacks (an object
    /// that never went through an API server).
    pub fn of(kind: &'a str, meta: &'a ObjectMeta) -> Result<Self, &'static str> {
        Ok(Owner {
            kind,
            namespace: meta.namespace.as_deref().ok_or("namespace")?,
            name: meta.name.as_deref().ok_or("name")?,
            uid: meta.uid.as_deref().ok_or("uid")?,
        })
    }
}

/// The cluster a controller runs in, as its AWS tags name it: `--cluster-name` (readable, chosen by the
/// operator, may be empty) and the uid of its `kube-system` namespace (made by the cluster, unique).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cluster<'a> {
    pub name: &'a str,
    pub uid: &'a str,
}

/// Who an AWS object belongs to, by its `bucketbroker.io/uid` tag: the only authority the controller takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    Ours,
    /// No uid tag: made by someone else, or by a create of ours interrupted before its tags were written.
    Untagged,
    /// Tagged with another object's uid.
    Foreign(String),
}

/// The ownership of an AWS object with `tags`, for the object with `uid` in `cluster`. An object tagged
/// for another cluster (another name, or another kube-system uid) is never ours; one without a cluster tag
/// (made before the name was set, or before clusters were told apart by uid) is judged by its uid alone.
pub fn ownership(tags: &[(String, String)], uid: &str, cluster: &Cluster<'_>) -> Ownership {
    if let Some((_, other)) = tags.iter().find(|(k, v)| k == tag::CLUSTER && v != cluster.name) {
        return Ownership::Foreign(format!("cluster {other}"));
    }
    if let Some((_, other)) = tags.iter().find(|(k, v)| k == tag::CLUSTER_UID && v != cluster.uid) {
        return Ownership::Foreign(format!("cluster uid {other}"));
    }
    match tags.iter().find(|(k, _)| k == tag::UID) {
        Some((_, v)) if v == uid => Ownership::Ours,
        Some((_, v)) => Ownership::Foreign(v.clone()),
        None => Ownership::Untagged,
    }
}

/// Whether the controller may adopt, change or delete the AWS object `name` for the object with `uid`:
/// its uid tag says so, or it has no uid tag and `name` is exactly the name derived from that uid.
pub fn may_manage(
    tags: &[(String, String)],
    uid: &str,
    cluster: &Cluster<'_>,
    name: &str,
    derived: &str,
) -> bool {
    match ownership(tags, uid, cluster) {
        Ownership::Ours => true,
        Ownership::Untagged => name == derived,
        Ownership::Foreign(_) => false,
    }
}

/// A stable 64-bit hash of a string (FNV-1a): the same on every build and platform, unlike std's hashers.
pub fn stable_hash(value: &str) -> u64 {
    value.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The tags of every AWS object the controller creates, sorted by key.
pub fn tags(owner: &Owner<'_>, deploy_env: &str, cluster: &Cluster<'_>) -> Vec<(String, String)> {
    let mut tags = vec![
        (tag::CREATED_BY.to_owned(), tag::CREATED_BY_VALUE.to_owned()),
        (tag::DEPLOY_ENV.to_owned(), deploy_env.to_owned()),
        (tag::KIND.to_owned(), owner.kind.to_owned()),
        (tag::NAME.to_owned(), owner.name.to_owned()),
        (tag::NAMESPACE.to_owned(), owner.namespace.to_owned()),
        (tag::UID.to_owned(), owner.uid.to_owned()),
    ];
    if !cluster.name.is_empty() {
        tags.push((tag::CLUSTER.to_owned(), cluster.name.to_owned()));
    }
    if !cluster.uid.is_empty() {
        tags.push((tag::CLUSTER_UID.to_owned(), cluster.uid.to_owned()));
    }
    tags.sort();
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b6c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d";
    const NONE: Cluster<'static> = Cluster { name: "", uid: "" };

    fn named(name: &str) -> Cluster<'_> {
        Cluster { name, uid: "" }
    }

    #[test]
    fn names_come_from_the_uid_and_fit_aws_limits() {
        let bucket = bucket_name("bucket-broker-", UID);
        assert_eq!(bucket, format!("bucket-broker-{UID}"));
        let longest = bucket_name(&"p".repeat(crate::config::MAX_BUCKET_PREFIX_LEN), UID);
        assert_eq!(longest.len(), 63);
        let user = user_name(&"u".repeat(crate::config::MAX_USER_PREFIX_LEN), UID);
        assert_eq!(user.len(), 64);
    }

    #[test]
    fn arns_and_endpoints_follow_the_partition() {
        assert_eq!(bucket_arn(partition("eu-west-2"), "b"), "arn:aws:s3:::b");
        assert_eq!(bucket_arn(partition("cn-north-1"), "b"), "arn:aws-cn:s3:::b");
        assert_eq!(bucket_arn(partition("us-gov-west-1"), "b"), "arn:aws-us-gov:s3:::b");
        assert_eq!(bucket_endpoint("b", "eu-west-2", None), "https://b.s3.eu-west-2.amazonaws.com");
        assert_eq!(bucket_endpoint("b", "cn-north-1", None), "https://b.s3.cn-north-1.amazonaws.com.cn");
        assert_eq!(
            bucket_endpoint("b", "eu-west-2", Some("http://127.0.0.1:5000/")),
            "http://127.0.0.1:5000/b"
        );
    }

    #[test]
    fn only_the_uid_tag_or_the_derived_name_proves_ownership() {
        let derived = bucket_name("bucket-broker-", UID);
        let ours = vec![(tag::UID.to_owned(), UID.to_owned())];
        let theirs = vec![(tag::UID.to_owned(), "other".to_owned()), (tag::NAME.to_owned(), "x".to_owned())];
        let untagged = vec![("cost-centre".to_owned(), "42".to_owned())];
        assert_eq!(ownership(&ours, UID, &NONE), Ownership::Ours);
        assert_eq!(ownership(&theirs, UID, &NONE), Ownership::Foreign("other".to_owned()));
        assert_eq!(ownership(&untagged, UID, &NONE), Ownership::Untagged);
        assert!(may_manage(&ours, UID, &NONE, "renamed-under-an-old-prefix", &derived));
        assert!(may_manage(&untagged, UID, &NONE, &derived, &derived), "a create interrupted before tagging");
        assert!(!may_manage(&untagged, UID, &NONE, "someone-elses-bucket", &derived));
        assert!(!may_manage(&theirs, UID, &NONE, &derived, &derived));
    }

    #[test]
    fn another_clusters_objects_are_never_ours() {
        let owner = Owner { kind: "Bucket", namespace: "team", name: "assets", uid: UID };
        let east = tags(&owner, "prod", &named("east"));
        assert_eq!(ownership(&east, UID, &named("east")), Ownership::Ours);
        assert_eq!(ownership(&east, UID, &named("west")), Ownership::Foreign("cluster east".to_owned()));
        assert_eq!(ownership(&east, UID, &NONE), Ownership::Foreign("cluster east".to_owned()));
        let unnamed = tags(&owner, "prod", &NONE);
        assert!(!unnamed.iter().any(|(k, _)| k == tag::CLUSTER), "no cluster tag without a cluster name");
        assert_eq!(ownership(&unnamed, UID, &named("east")), Ownership::Ours, "made before the name was set");
    }

    #[test]
    fn a_cluster_is_told_apart_by_its_kube_system_uid_whatever_its_name() {
        let owner = Owner { kind: "Bucket", namespace: "team", name: "assets", uid: UID };
        let here = Cluster { name: "prod", uid: "11111111-aaaa" };
        let restored = Cluster { name: "prod", uid: "22222222-bbbb" };
        let tagged = tags(&owner, "prod", &here);
        assert!(tagged.contains(&(tag::CLUSTER_UID.to_owned(), here.uid.to_owned())));
        assert_eq!(ownership(&tagged, UID, &here), Ownership::Ours);
        assert_eq!(
            ownership(&tagged, UID, &restored),
            Ownership::Foreign("cluster uid 11111111-aaaa".to_owned()),
            "the same name and the same owner uid, another cluster"
        );
        let derived = bucket_name("bucket-broker-", UID);
        assert!(!may_manage(&tagged, UID, &restored, &derived, &derived));
        let before_upgrade = tags(&owner, "prod", &named("prod"));
        assert_eq!(ownership(&before_upgrade, UID, &here), Ownership::Ours, "tagged before uids were");
    }

    #[test]
    fn tags_name_the_owner() {
        let owner = Owner { kind: "Bucket", namespace: "team", name: "assets", uid: UID };
        let tags = tags(&owner, "prod", &NONE);
        let get = |k: &str| tags.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get(tag::UID), Some(UID));
        assert_eq!(get(tag::NAMESPACE), Some("team"));
        assert_eq!(get(tag::NAME), Some("assets"));
        assert_eq!(get(tag::KIND), Some("Bucket"));
        assert_eq!(get(tag::CREATED_BY), Some("bucket-broker"));
        assert_eq!(get(tag::DEPLOY_ENV), Some("prod"));
        assert_eq!(tags.len(), 6);
    }
}
