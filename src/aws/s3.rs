//! S3 bucket operations. Each `ensure_*` reads the current setting first and writes only when it differs,
//! so a bucket already in the desired state costs reads and no write.

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
    BucketVersioningStatus, CorsConfiguration, CreateBucketConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, NoncurrentVersionExpiration, ObjectOwnership,
    OwnershipControls, OwnershipControlsRule, PublicAccessBlockConfiguration, ServerSideEncryption,
    ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag, Tagging,
    VersioningConfiguration,
};
use serde_json::Value;

use super::{AwsError, CallStats, ErrorKind, call, optional};
use crate::desired::policy;

const S3: &str = "s3";

/// What changed while ensuring a setting: reported as events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    Created,
    Updated,
    Deleted,
}

/// The four public access block settings, in the order AWS lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicAccessBlock {
    pub block_public_acls: bool,
    pub ignore_public_acls: bool,
    pub block_public_policy: bool,
    pub restrict_public_buckets: bool,
}

impl PublicAccessBlock {
    /// ACLs stay blocked for every bucket (ownership is enforced, so ACLs are off anyway); a public
    /// bucket needs its policy to be allowed to grant anonymous reads.
    pub fn for_bucket(public: bool) -> Self {
        PublicAccessBlock {
            block_public_acls: true,
            ignore_public_acls: true,
            block_public_policy: !public,
            restrict_public_buckets: !public,
        }
    }
}

/// A bucket's default encryption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encryption {
    /// S3-managed keys (SSE-S3, AES256): what every bucket gets unless its class names a KMS key.
    SseS3,
    /// The platform's KMS key (SSE-KMS). Users of the bucket then need `kms:GenerateDataKey` and
    /// `kms:Decrypt` on the key through S3 ([`policy::kms_statement`]).
    SseKms {
        /// The key's ARN (`arn:aws:kms:<region>:<account>:key/<id>`), written and compared as given.
        key_arn: String,
        /// An S3 Bucket Key: S3 asks KMS for a bucket-level key now and then instead of a data key per
        /// object, which cuts KMS requests (and their cost) by up to 99%.
        bucket_key: bool,
    },
}

impl Encryption {
    /// Whether one of a bucket's encryption rules already applies this encryption. SSE-S3 is applied by any
    /// AES256 rule (as it always was); SSE-KMS by an `aws:kms` rule with this key and this Bucket Key setting
    /// (an absent setting is off).
    pub fn is_applied_by(&self, rules: &[ServerSideEncryptionRule]) -> bool {
        rules.iter().any(|rule| {
            let Some(by_default) = rule.apply_server_side_encryption_by_default.as_ref() else {
                return false;
            };
            match self {
                Encryption::SseS3 => by_default.sse_algorithm == ServerSideEncryption::Aes256,
                Encryption::SseKms { key_arn, bucket_key } => {
                    by_default.sse_algorithm == ServerSideEncryption::AwsKms
                        && by_default.kms_master_key_id.as_deref() == Some(key_arn.as_str())
                        && rule.bucket_key_enabled.unwrap_or(false) == *bucket_key
                }
            }
        })
    }
}

/// A bucket's versioning, once it is asked for (see [`BucketOps::ensure_versioning`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versioning {
    /// Every overwrite and delete keeps the previous version.
    Enabled,
    /// No new versions are kept; the versions already kept stay. S3 cannot turn versioning off once it was
    /// enabled: this is the nearest there is.
    Suspended,
}

/// Every ID of a lifecycle rule of ours starts with this; rules with other IDs are someone else's.
pub const LIFECYCLE_RULE_PREFIX: &str = "bucket-broker-";
const NONCURRENT_RULE: &str = "bucket-broker-noncurrent-version-expiration";
const ABORT_UPLOADS_RULE: &str = "bucket-broker-abort-incomplete-multipart-upload";
const EXPIRE_OBJECTS_RULE: &str = "bucket-broker-expire-objects";

/// Our lifecycle settings for a bucket, each in days; `None` is no rule for it. Each setting that is set
/// becomes one rule on the whole bucket (see [`BucketOps::ensure_lifecycle`]). Days must be at least 1: S3
/// refuses other values (an `Invalid` error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lifecycle {
    /// Delete versions this many days after they stop being the current one (for a versioned bucket).
    pub noncurrent_version_expiration_days: Option<i32>,
    /// Abort multipart uploads not completed this many days after they started, and free their parts.
    pub abort_incomplete_multipart_upload_days: Option<i32>,
    /// Expire objects this many days after they were created (with versioning, they become noncurrent).
    pub expire_objects_after_days: Option<i32>,
}

impl Lifecycle {
    /// Our rules, in a fixed order: one per setting, on the whole bucket (a filter with an empty prefix).
    fn rules(&self) -> Result<Vec<LifecycleRule>, AwsError> {
        let whole_bucket = || LifecycleRuleFilter::builder().prefix("").build();
        let rule = |id: &str| {
            LifecycleRule::builder().id(id).status(ExpirationStatus::Enabled).filter(whole_bucket())
        };
        let mut rules = Vec::new();
        if let Some(days) = self.noncurrent_version_expiration_days {
            let expiration = NoncurrentVersionExpiration::builder().noncurrent_days(days).build();
            rules.push(rule(NONCURRENT_RULE).noncurrent_version_expiration(expiration));
        }
        if let Some(days) = self.abort_incomplete_multipart_upload_days {
            let abort = AbortIncompleteMultipartUpload::builder().days_after_initiation(days).build();
            rules.push(rule(ABORT_UPLOADS_RULE).abort_incomplete_multipart_upload(abort));
        }
        if let Some(days) = self.expire_objects_after_days {
            rules.push(
                rule(EXPIRE_OBJECTS_RULE).expiration(LifecycleExpiration::builder().days(days).build()),
            );
        }
        rules
            .into_iter()
            .map(|r| r.build().map_err(|e| invalid("PutBucketLifecycleConfiguration", e)))
            .collect()
    }
}

fn is_our_lifecycle_rule(rule: &LifecycleRule) -> bool {
    rule.id.as_deref().is_some_and(|id| id.starts_with(LIFECYCLE_RULE_PREFIX))
}

/// What a lifecycle rule of ours means, whatever way S3 writes it back: a rule on the whole bucket is one
/// with no filter, an empty one or an empty prefix. Anything we never write (transitions, dates, tags,
/// sizes, delete markers) is `other`, so a rule carrying it is never taken for ours.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RuleMeaning {
    id: Option<String>,
    enabled: bool,
    whole_bucket: bool,
    noncurrent_days: Option<i32>,
    abort_days: Option<i32>,
    expiration_days: Option<i32>,
    other: bool,
}

impl RuleMeaning {
    // The rule-level `Prefix` is deprecated, but S3 still returns it for rules written with it.
    #[allow(deprecated)]
    fn of(rule: &LifecycleRule) -> Self {
        let empty = |prefix: &Option<String>| prefix.as_deref().unwrap_or_default().is_empty();
        let whole_bucket = empty(&rule.prefix)
            && rule.filter.as_ref().is_none_or(|f| {
                empty(&f.prefix)
                    && f.tag.is_none()
                    && f.and.is_none()
                    && f.object_size_greater_than.is_none()
                    && f.object_size_less_than.is_none()
            });
        let expiration = rule.expiration.as_ref();
        let noncurrent = rule.noncurrent_version_expiration.as_ref();
        let other = expiration
            .is_some_and(|e| e.date.is_some() || e.expired_object_delete_marker == Some(true))
            || noncurrent.is_some_and(|n| n.newer_noncurrent_versions.is_some())
            || rule.transitions.as_ref().is_some_and(|t| !t.is_empty())
            || rule.noncurrent_version_transitions.as_ref().is_some_and(|t| !t.is_empty());
        RuleMeaning {
            id: rule.id.clone(),
            enabled: rule.status == ExpirationStatus::Enabled,
            whole_bucket,
            noncurrent_days: noncurrent.and_then(|n| n.noncurrent_days),
            abort_days: rule.abort_incomplete_multipart_upload.as_ref().and_then(|a| a.days_after_initiation),
            expiration_days: expiration.and_then(|e| e.days),
            other,
        }
    }
}

/// One CORS rule: which web origins may make which cross-origin requests to the bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorsRule {
    /// Origins allowed (`https://app.example.com`; one `*` wildcard allowed).
    pub allowed_origins: Vec<String>,
    /// HTTP methods allowed: `GET`, `PUT`, `POST`, `DELETE`, `HEAD`.
    pub allowed_methods: Vec<String>,
    /// Headers a preflight request may ask for (`Access-Control-Request-Headers`; `*` allowed).
    pub allowed_headers: Vec<String>,
    /// Response headers the browser lets the page read (`ETag`, ...).
    pub expose_headers: Vec<String>,
    /// How long a browser may cache the preflight answer, in seconds.
    pub max_age_seconds: Option<i32>,
}

impl CorsRule {
    fn from_sdk(rule: &aws_sdk_s3::types::CorsRule) -> Self {
        CorsRule {
            allowed_origins: rule.allowed_origins.clone(),
            allowed_methods: rule.allowed_methods.clone(),
            allowed_headers: rule.allowed_headers.clone().unwrap_or_default(),
            expose_headers: rule.expose_headers.clone().unwrap_or_default(),
            max_age_seconds: rule.max_age_seconds,
        }
    }

    fn to_sdk(&self) -> Result<aws_sdk_s3::types::CorsRule, aws_sdk_s3::error::BuildError> {
        let list = |items: &[String]| (!items.is_empty()).then(|| items.to_vec());
        aws_sdk_s3::types::CorsRule::builder()
            .set_allowed_origins(Some(self.allowed_origins.clone()))
            .set_allowed_methods(Some(self.allowed_methods.clone()))
            .set_allowed_headers(list(&self.allowed_headers))
            .set_expose_headers(list(&self.expose_headers))
            .set_max_age_seconds(self.max_age_seconds)
            .build()
    }

    /// The same rule in meaning: each list is a set (order and repeats do not matter).
    fn same_as(&self, other: &CorsRule) -> bool {
        fn set(items: &[String]) -> std::collections::BTreeSet<&str> {
            items.iter().map(String::as_str).collect()
        }
        set(&self.allowed_origins) == set(&other.allowed_origins)
            && set(&self.allowed_methods) == set(&other.allowed_methods)
            && set(&self.allowed_headers) == set(&other.allowed_headers)
            && set(&self.expose_headers) == set(&other.expose_headers)
            && self.max_age_seconds == other.max_age_seconds
    }
}

/// S3 calls on one bucket, with a client for the bucket's region.
pub struct BucketOps<'a> {
    pub client: Client,
    pub stats: &'a CallStats,
    pub bucket: &'a str,
    /// The account the bucket must belong to, sent as `ExpectedBucketOwner` on every call that takes it:
    /// S3 refuses the call (403) when the bucket is another account's, so a same-named bucket elsewhere is
    /// never read, changed or deleted. `None` only in tests that inspect buckets as an administrator.
    pub owner: Option<&'a str>,
}

impl BucketOps<'_> {
    fn owner(&self) -> Option<String> {
        self.owner.filter(|o| !o.is_empty()).map(str::to_owned)
    }

    /// Whether the bucket exists (and is reachable with our credentials).
    pub async fn exists(&self) -> Result<bool, AwsError> {
        let head =
            self.client.head_bucket().bucket(self.bucket).set_expected_bucket_owner(self.owner()).send();
        Ok(optional(call(self.stats, S3, "HeadBucket", head).await)?.is_some())
    }

    /// Whether the bucket is one of this account's: ListBuckets lists only the caller's own buckets,
    /// whatever the endpoint does with `ExpectedBucketOwner`. Asked only when a bucket's ownership is in
    /// doubt (no uid tag, or a name in status), so it costs nothing in steady state.
    pub async fn in_account(&self) -> Result<bool, AwsError> {
        let listed = list_buckets(&self.client, self.stats, self.bucket).await?;
        Ok(listed.iter().any(|b| b.name == self.bucket))
    }

    /// Creates the bucket; one we already own counts as created.
    pub async fn create(&self, region: &str) -> Result<Change, AwsError> {
        let mut request = self.client.create_bucket().bucket(self.bucket);
        // us-east-1 is the one region that rejects its own name as a location constraint.
        if region != "us-east-1" {
            let configuration = CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build();
            request = request.create_bucket_configuration(configuration);
        }
        match call(self.stats, S3, "CreateBucket", request.send()).await {
            Ok(_) => Ok(Change::Created),
            Err(err) if err.is(ErrorKind::AlreadyExists) => Ok(Change::Unchanged),
            Err(err) => Err(err),
        }
    }

    /// The bucket's tags (empty when it has none), or `None` when the bucket does not exist: one read
    /// answers both, which keeps a steady-state resync to five reads.
    pub async fn tags(&self) -> Result<Option<Vec<(String, String)>>, AwsError> {
        let get = self
            .client
            .get_bucket_tagging()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .send();
        let tag_set = match call(self.stats, S3, "GetBucketTagging", get).await {
            Ok(tagging) => tagging.tag_set,
            Err(err) if err.has_code("NoSuchBucket") => return Ok(None),
            Err(err) if err.is(ErrorKind::NotFound) => Vec::new(),
            Err(err) => return Err(err),
        };
        let mut tags: Vec<(String, String)> = tag_set.into_iter().map(|tag| (tag.key, tag.value)).collect();
        tags.sort();
        Ok(Some(tags))
    }

    /// Sets the tags when `current` differs from `desired` (both sorted).
    pub async fn ensure_tags(
        &self,
        current: &[(String, String)],
        desired: &[(String, String)],
    ) -> Result<Change, AwsError> {
        if current == desired {
            return Ok(Change::Unchanged);
        }
        let tag_set = desired
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("PutBucketTagging", e))?;
        let tagging = Tagging::builder()
            .set_tag_set(Some(tag_set))
            .build()
            .map_err(|e| invalid("PutBucketTagging", e))?;
        let put = self
            .client
            .put_bucket_tagging()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .tagging(tagging)
            .send();
        call(self.stats, S3, "PutBucketTagging", put).await?;
        Ok(Change::Updated)
    }

    /// Default encryption: SSE-S3 (AES256) or SSE-KMS with the platform's key. Read first; written only when
    /// no rule of the bucket already applies the desired encryption ([`Encryption::is_applied_by`]).
    pub async fn ensure_encryption(&self, desired: &Encryption) -> Result<Change, AwsError> {
        let get = self
            .client
            .get_bucket_encryption()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .send();
        let current = optional(call(self.stats, S3, "GetBucketEncryption", get).await)?;
        let rules = current.and_then(|c| c.server_side_encryption_configuration).map(|c| c.rules);
        if desired.is_applied_by(rules.as_deref().unwrap_or_default()) {
            return Ok(Change::Unchanged);
        }
        self.put_encryption(desired).await
    }

    /// Sets default encryption without reading first (a bucket this pass created).
    pub async fn put_encryption(&self, desired: &Encryption) -> Result<Change, AwsError> {
        let by_default = match desired {
            Encryption::SseS3 => {
                ServerSideEncryptionByDefault::builder().sse_algorithm(ServerSideEncryption::Aes256)
            }
            Encryption::SseKms { key_arn, .. } => ServerSideEncryptionByDefault::builder()
                .sse_algorithm(ServerSideEncryption::AwsKms)
                .kms_master_key_id(key_arn),
        }
        .build()
        .map_err(|e| invalid("PutBucketEncryption", e))?;
        let mut rule =
            ServerSideEncryptionRule::builder().apply_server_side_encryption_by_default(by_default);
        if let Encryption::SseKms { bucket_key, .. } = desired {
            rule = rule.bucket_key_enabled(*bucket_key);
        }
        let configuration = ServerSideEncryptionConfiguration::builder()
            .rules(rule.build())
            .build()
            .map_err(|e| invalid("PutBucketEncryption", e))?;
        let put = self
            .client
            .put_bucket_encryption()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .server_side_encryption_configuration(configuration)
            .send();
        call(self.stats, S3, "PutBucketEncryption", put).await?;
        Ok(Change::Updated)
    }

    /// Versioning. `None` leaves the bucket as AWS has it and makes no call at all: a bucket never versioned
    /// stays so. S3 cannot turn versioning off once it was enabled, only suspend it (new objects then get no
    /// version, the versions already kept stay until deleted or expired): to stop versioning, ask for
    /// [`Versioning::Suspended`]. A bucket never versioned already behaves as a suspended one, so asking it
    /// for `Suspended` writes nothing.
    pub async fn ensure_versioning(&self, desired: Option<Versioning>) -> Result<Change, AwsError> {
        let Some(desired) = desired else { return Ok(Change::Unchanged) };
        let get = self
            .client
            .get_bucket_versioning()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .send();
        let current = call(self.stats, S3, "GetBucketVersioning", get).await?.status;
        let current = match current {
            Some(BucketVersioningStatus::Enabled) => Some(Versioning::Enabled),
            // Never versioned (no status) or suspended: no new versions are kept.
            None | Some(BucketVersioningStatus::Suspended) => Some(Versioning::Suspended),
            // A status this SDK does not know: written over.
            Some(_) => None,
        };
        if current == Some(desired) {
            return Ok(Change::Unchanged);
        }
        let status = match desired {
            Versioning::Enabled => BucketVersioningStatus::Enabled,
            Versioning::Suspended => BucketVersioningStatus::Suspended,
        };
        let put = self
            .client
            .put_bucket_versioning()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .versioning_configuration(VersioningConfiguration::builder().status(status).build())
            .send();
        call(self.stats, S3, "PutBucketVersioning", put).await?;
        Ok(Change::Updated)
    }

    /// The lifecycle rules. Ours are one rule per setting of `desired`, on the whole bucket, with an ID
    /// starting [`LIFECYCLE_RULE_PREFIX`]; rules with any other ID are someone else's and kept on every pass,
    /// as in the bucket policy. Written only when our rules differ in meaning (in any order) from what the
    /// bucket holds; when no rule at all would be left, the lifecycle configuration is deleted.
    pub async fn ensure_lifecycle(&self, desired: &Lifecycle) -> Result<Change, AwsError> {
        let get = self
            .client
            .get_bucket_lifecycle_configuration()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .send();
        let current = optional(call(self.stats, S3, "GetBucketLifecycleConfiguration", get).await)?;
        let minimum_object_size =
            current.as_ref().and_then(|c| c.transition_default_minimum_object_size.clone());
        let current_rules = current.and_then(|c| c.rules);
        let (ours, mut merged): (Vec<LifecycleRule>, Vec<LifecycleRule>) =
            current_rules.iter().flatten().cloned().partition(is_our_lifecycle_rule);
        let wanted = desired.rules()?;
        let mut have: Vec<RuleMeaning> = ours.iter().map(RuleMeaning::of).collect();
        let mut want: Vec<RuleMeaning> = wanted.iter().map(RuleMeaning::of).collect();
        have.sort();
        want.sort();
        if have == want {
            return Ok(Change::Unchanged);
        }
        merged.extend(wanted);
        if merged.is_empty() {
            let delete = self
                .client
                .delete_bucket_lifecycle()
                .bucket(self.bucket)
                .set_expected_bucket_owner(self.owner())
                .send();
            optional(call(self.stats, S3, "DeleteBucketLifecycle", delete).await)?;
            return Ok(Change::Deleted);
        }
        let configuration = BucketLifecycleConfiguration::builder()
            .set_rules(Some(merged))
            .build()
            .map_err(|e| invalid("PutBucketLifecycleConfiguration", e))?;
        let put = self
            .client
            .put_bucket_lifecycle_configuration()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .lifecycle_configuration(configuration)
            // Kept as it was: a write of ours must not change a setting of the rules others wrote.
            .set_transition_default_minimum_object_size(minimum_object_size)
            .send();
        call(self.stats, S3, "PutBucketLifecycleConfiguration", put).await?;
        Ok(if current_rules.is_some() { Change::Updated } else { Change::Created })
    }

    /// The CORS configuration: all of it is the tenant's (nothing is merged). Written only when it differs
    /// in meaning from `desired` (same rules in the same order, since S3 applies the first rule that
    /// matches; the items of each list in any order); deleted when `desired` is empty.
    pub async fn ensure_cors(&self, desired: &[CorsRule]) -> Result<Change, AwsError> {
        let get =
            self.client.get_bucket_cors().bucket(self.bucket).set_expected_bucket_owner(self.owner()).send();
        let current = optional(call(self.stats, S3, "GetBucketCors", get).await)?
            .map(|c| c.cors_rules.unwrap_or_default())
            .filter(|rules| !rules.is_empty());
        let Some(current) = current else {
            if desired.is_empty() {
                return Ok(Change::Unchanged);
            }
            self.put_cors(desired).await?;
            return Ok(Change::Created);
        };
        let current: Vec<CorsRule> = current.iter().map(CorsRule::from_sdk).collect();
        if current.len() == desired.len() && current.iter().zip(desired).all(|(a, b)| a.same_as(b)) {
            return Ok(Change::Unchanged);
        }
        if desired.is_empty() {
            let delete = self
                .client
                .delete_bucket_cors()
                .bucket(self.bucket)
                .set_expected_bucket_owner(self.owner())
                .send();
            optional(call(self.stats, S3, "DeleteBucketCors", delete).await)?;
            return Ok(Change::Deleted);
        }
        self.put_cors(desired).await?;
        Ok(Change::Updated)
    }

    async fn put_cors(&self, desired: &[CorsRule]) -> Result<(), AwsError> {
        let rules = desired
            .iter()
            .map(CorsRule::to_sdk)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("PutBucketCors", e))?;
        let configuration = CorsConfiguration::builder()
            .set_cors_rules(Some(rules))
            .build()
            .map_err(|e| invalid("PutBucketCors", e))?;
        let put = self
            .client
            .put_bucket_cors()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .cors_configuration(configuration)
            .send();
        call(self.stats, S3, "PutBucketCors", put).await?;
        Ok(())
    }

    /// The public access block.
    pub async fn ensure_public_access_block(&self, desired: PublicAccessBlock) -> Result<Change, AwsError> {
        let get = self
            .client
            .get_public_access_block()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .send();
        let current = optional(call(self.stats, S3, "GetPublicAccessBlock", get).await)?
            .and_then(|c| c.public_access_block_configuration)
            .map(|c| PublicAccessBlock {
                block_public_acls: c.block_public_acls.unwrap_or(false),
                ignore_public_acls: c.ignore_public_acls.unwrap_or(false),
                block_public_policy: c.block_public_policy.unwrap_or(false),
                restrict_public_buckets: c.restrict_public_buckets.unwrap_or(false),
            });
        if current == Some(desired) {
            return Ok(Change::Unchanged);
        }
        self.put_public_access_block(desired).await
    }

    /// Sets the public access block without reading first.
    pub async fn put_public_access_block(&self, desired: PublicAccessBlock) -> Result<Change, AwsError> {
        let configuration = PublicAccessBlockConfiguration::builder()
            .block_public_acls(desired.block_public_acls)
            .ignore_public_acls(desired.ignore_public_acls)
            .block_public_policy(desired.block_public_policy)
            .restrict_public_buckets(desired.restrict_public_buckets)
            .build();
        let put = self
            .client
            .put_public_access_block()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .public_access_block_configuration(configuration)
            .send();
        call(self.stats, S3, "PutPublicAccessBlock", put).await?;
        Ok(Change::Updated)
    }

    /// Object ownership `BucketOwnerEnforced`: ACLs are disabled, the bucket owner owns every object.
    pub async fn ensure_owner_enforced(&self) -> Result<Change, AwsError> {
        let get = self
            .client
            .get_bucket_ownership_controls()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .send();
        let enforced = optional(call(self.stats, S3, "GetBucketOwnershipControls", get).await)?
            .and_then(|c| c.ownership_controls)
            .is_some_and(|c| {
                c.rules.iter().any(|r| r.object_ownership == ObjectOwnership::BucketOwnerEnforced)
            });
        if enforced {
            return Ok(Change::Unchanged);
        }
        self.put_owner_enforced().await
    }

    /// Sets `BucketOwnerEnforced` without reading first.
    pub async fn put_owner_enforced(&self) -> Result<Change, AwsError> {
        let rule = OwnershipControlsRule::builder()
            .object_ownership(ObjectOwnership::BucketOwnerEnforced)
            .build()
            .map_err(|e| invalid("PutBucketOwnershipControls", e))?;
        let controls = OwnershipControls::builder()
            .rules(rule)
            .build()
            .map_err(|e| invalid("PutBucketOwnershipControls", e))?;
        let put = self
            .client
            .put_bucket_ownership_controls()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .ownership_controls(controls)
            .send();
        call(self.stats, S3, "PutBucketOwnershipControls", put).await?;
        Ok(Change::Updated)
    }

    /// The bucket policy: our statements written when they differ in meaning, others' kept; deleted when
    /// nothing would be left.
    pub async fn ensure_policy(&self, desired: Option<&Value>) -> Result<Change, AwsError> {
        let current = self.current_policy().await?;
        self.set_policy(current, desired).await
    }

    async fn current_policy(&self) -> Result<Option<Value>, AwsError> {
        let get = self
            .client
            .get_bucket_policy()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .send();
        Ok(optional(call(self.stats, S3, "GetBucketPolicy", get).await)?
            .and_then(|p| p.policy)
            .and_then(|p| serde_json::from_str(&p).ok()))
    }

    /// Writes our statements (`desired`, merged with others') even when they are there already: whether S3
    /// accepts it tells that writing the policy is allowed at all. `Unchanged` when there is nothing to write.
    pub async fn rewrite_policy(&self, desired: Option<&Value>) -> Result<Change, AwsError> {
        let current = self.current_policy().await?;
        let Some(merged) = policy::merge_bucket_policy(current.as_ref(), desired) else {
            return Ok(Change::Unchanged);
        };
        let put = self
            .client
            .put_bucket_policy()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .policy(merged.to_string())
            .send();
        call(self.stats, S3, "PutBucketPolicy", put).await?;
        Ok(Change::Updated)
    }

    /// The bucket policy of a bucket this pass created (it has none), without reading first.
    pub async fn put_policy(&self, desired: Option<&Value>) -> Result<Change, AwsError> {
        self.set_policy(None, desired).await
    }

    /// Writes our statements (`desired`) into the policy, keeping every statement others added.
    async fn set_policy(&self, current: Option<Value>, desired: Option<&Value>) -> Result<Change, AwsError> {
        let merged = policy::merge_bucket_policy(current.as_ref(), desired);
        match (current, merged.as_ref()) {
            (None, None) => Ok(Change::Unchanged),
            (Some(current), Some(desired)) if policy::equivalent(&current, desired) => Ok(Change::Unchanged),
            (Some(_), None) => {
                let delete = self
                    .client
                    .delete_bucket_policy()
                    .bucket(self.bucket)
                    .set_expected_bucket_owner(self.owner())
                    .send();
                optional(call(self.stats, S3, "DeleteBucketPolicy", delete).await)?;
                Ok(Change::Deleted)
            }
            (current, Some(desired)) => {
                let put = self
                    .client
                    .put_bucket_policy()
                    .bucket(self.bucket)
                    .set_expected_bucket_owner(self.owner())
                    .policy(desired.to_string())
                    .send();
                call(self.stats, S3, "PutBucketPolicy", put).await?;
                Ok(if current.is_some() { Change::Updated } else { Change::Created })
            }
        }
    }

    /// How many objects the bucket holds, counting no further than `limit`: enough to tell a person how
    /// much is left, without listing a large bucket to the end.
    pub async fn count_objects(&self, limit: i32) -> Result<ObjectCount, AwsError> {
        let list = self
            .client
            .list_objects_v2()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .max_keys(limit)
            .send();
        let page = call(self.stats, S3, "ListObjectsV2", list).await?;
        let count = page.key_count.unwrap_or(0).max(0) as u64;
        Ok(ObjectCount { count, more: page.is_truncated.unwrap_or(false) })
    }

    /// Deletes the bucket; one already gone counts as deleted. A non-empty bucket is a `Conflict` error.
    pub async fn delete(&self) -> Result<Change, AwsError> {
        let delete =
            self.client.delete_bucket().bucket(self.bucket).set_expected_bucket_owner(self.owner()).send();
        match call(self.stats, S3, "DeleteBucket", delete).await {
            Ok(_) => Ok(Change::Deleted),
            Err(err) if err.is(ErrorKind::NotFound) => Ok(Change::Unchanged),
            Err(err) => Err(err),
        }
    }
}

/// A bucket as ListBuckets shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedBucket {
    pub name: String,
    /// When AWS created it, in seconds since the Unix epoch.
    pub created: Option<i64>,
    /// Its region, when AWS says.
    pub region: Option<String>,
}

/// Every bucket of the account whose name starts with `prefix`.
pub async fn list_buckets(
    client: &Client,
    stats: &CallStats,
    prefix: &str,
) -> Result<Vec<ListedBucket>, AwsError> {
    let mut buckets = Vec::new();
    let mut token = None;
    loop {
        // Paginated explicitly: AWS refuses an unpaginated listing in accounts allowed over 10,000 buckets.
        let list = client
            .list_buckets()
            .prefix(prefix)
            .max_buckets(1000)
            .set_continuation_token(token.take())
            .send();
        let page = call(stats, S3, "ListBuckets", list).await?;
        buckets.extend(page.buckets.unwrap_or_default().into_iter().filter_map(|b| {
            // Filtered here too: S3-compatible stores may ignore the prefix.
            let name = b.name.filter(|n| n.starts_with(prefix))?;
            Some(ListedBucket { name, created: b.creation_date.map(|d| d.secs()), region: b.bucket_region })
        }));
        match page.continuation_token {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => return Ok(buckets),
        }
    }
}

/// The result of counting objects up to a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectCount {
    pub count: u64,
    /// More objects exist beyond `count`.
    pub more: bool,
}

impl std::fmt::Display for ObjectCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = if self.count == 1 && !self.more { "object" } else { "objects" };
        if self.more {
            write!(f, "more than {} {plural}", self.count)
        } else {
            write!(f, "{} {plural}", self.count)
        }
    }
}

fn invalid(operation: &'static str, err: impl std::fmt::Display) -> AwsError {
    AwsError {
        service: S3,
        operation,
        kind: ErrorKind::Invalid,
        code: None,
        status: None,
        message: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "arn:aws:kms:eu-west-2:123456789012:key/1234abcd";

    fn rule(
        algorithm: ServerSideEncryption,
        key: Option<&str>,
        bucket_key: Option<bool>,
    ) -> ServerSideEncryptionRule {
        let by_default = ServerSideEncryptionByDefault::builder()
            .sse_algorithm(algorithm)
            .set_kms_master_key_id(key.map(str::to_owned))
            .build()
            .expect("by default");
        ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(by_default)
            .set_bucket_key_enabled(bucket_key)
            .build()
    }

    #[test]
    fn encryption_is_applied_by_the_same_algorithm_key_and_bucket_key_setting() {
        let sse_s3 = [rule(ServerSideEncryption::Aes256, None, None)];
        let kms = [rule(ServerSideEncryption::AwsKms, Some(KEY), Some(true))];
        let with_bucket_key = Encryption::SseKms { key_arn: KEY.to_owned(), bucket_key: true };
        let without_bucket_key = Encryption::SseKms { key_arn: KEY.to_owned(), bucket_key: false };
        assert!(Encryption::SseS3.is_applied_by(&sse_s3));
        assert!(!Encryption::SseS3.is_applied_by(&kms));
        assert!(!Encryption::SseS3.is_applied_by(&[]));
        assert!(with_bucket_key.is_applied_by(&kms));
        assert!(!without_bucket_key.is_applied_by(&kms), "the Bucket Key setting counts");
        assert!(without_bucket_key.is_applied_by(&[rule(ServerSideEncryption::AwsKms, Some(KEY), None)]));
        let other_key = Encryption::SseKms { key_arn: format!("{KEY}0"), bucket_key: true };
        assert!(!other_key.is_applied_by(&kms), "another key is drift");
        assert!(!with_bucket_key.is_applied_by(&sse_s3));
    }

    #[test]
    fn our_lifecycle_rules_are_one_per_setting_on_the_whole_bucket() {
        assert!(Lifecycle::default().rules().expect("rules").is_empty());
        let all = Lifecycle {
            noncurrent_version_expiration_days: Some(30),
            abort_incomplete_multipart_upload_days: Some(7),
            expire_objects_after_days: Some(365),
        };
        let rules = all.rules().expect("rules");
        let ids: Vec<&str> = rules.iter().filter_map(|r| r.id.as_deref()).collect();
        assert_eq!(ids, [NONCURRENT_RULE, ABORT_UPLOADS_RULE, EXPIRE_OBJECTS_RULE]);
        for rule in &rules {
            assert!(is_our_lifecycle_rule(rule));
            let meaning = RuleMeaning::of(rule);
            assert!(meaning.enabled && meaning.whole_bucket && !meaning.other, "{meaning:?}");
        }
        assert_eq!(RuleMeaning::of(&rules[0]).noncurrent_days, Some(30));
        assert_eq!(RuleMeaning::of(&rules[1]).abort_days, Some(7));
        assert_eq!(RuleMeaning::of(&rules[2]).expiration_days, Some(365));
    }

    #[test]
    #[allow(deprecated)]
    fn a_lifecycle_rule_means_the_same_however_s3_writes_the_whole_bucket() {
        let ours = &Lifecycle { expire_objects_after_days: Some(5), ..Lifecycle::default() }
            .rules()
            .expect("rules")[0];
        let mut no_filter = ours.clone();
        no_filter.filter = None;
        let mut empty_filter = ours.clone();
        empty_filter.filter = Some(LifecycleRuleFilter::builder().build());
        let mut legacy_prefix = no_filter.clone();
        legacy_prefix.prefix = Some(String::new());
        for same in [&no_filter, &empty_filter, &legacy_prefix] {
            assert_eq!(RuleMeaning::of(same), RuleMeaning::of(ours));
        }
        let mut narrower = ours.clone();
        narrower.filter = Some(LifecycleRuleFilter::builder().prefix("logs/").build());
        let mut disabled = ours.clone();
        disabled.status = ExpirationStatus::Disabled;
        let mut with_date_too = ours.clone();
        with_date_too.expiration =
            Some(LifecycleExpiration::builder().days(5).expired_object_delete_marker(true).build());
        for different in [&narrower, &disabled, &with_date_too] {
            assert_ne!(RuleMeaning::of(different), RuleMeaning::of(ours));
        }
        let mut theirs = ours.clone();
        theirs.id = Some("archive-logs".to_owned());
        assert!(!is_our_lifecycle_rule(&theirs));
        theirs.id = None;
        assert!(!is_our_lifecycle_rule(&theirs), "a rule without an ID is not ours");
    }

    #[test]
    fn cors_rules_compare_as_sets_and_survive_the_sdk_round_trip() {
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let rule = CorsRule {
            allowed_origins: strings(&["https://a.example", "https://b.example"]),
            allowed_methods: strings(&["GET", "PUT"]),
            allowed_headers: strings(&["*"]),
            expose_headers: vec![],
            max_age_seconds: Some(300),
        };
        let reordered = CorsRule {
            allowed_origins: strings(&["https://b.example", "https://a.example"]),
            allowed_methods: strings(&["PUT", "GET", "GET"]),
            ..rule.clone()
        };
        assert!(rule.same_as(&reordered));
        assert!(!rule.same_as(&CorsRule { max_age_seconds: None, ..rule.clone() }));
        assert!(!rule.same_as(&CorsRule { allowed_methods: strings(&["GET"]), ..rule.clone() }));
        let sdk = rule.to_sdk().expect("a valid rule");
        assert_eq!(sdk.expose_headers, None, "an empty list is not sent");
        assert_eq!(CorsRule::from_sdk(&sdk), rule);
    }
}
