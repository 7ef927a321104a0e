//! S3 bucket operations. Each `ensure_*` reads the current setting first and writes only when it differs,
//! so a bucket already in the desired state costs reads and no write.

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, ObjectOwnership, OwnershipControls,
    OwnershipControlsRule, PublicAccessBlockConfiguration, ServerSideEncryption,
    ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag, Tagging,
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

    /// Default encryption with S3-managed keys (SSE-S3, AES256).
    pub async fn ensure_encryption(&self) -> Result<Change, AwsError> {
        let get = self
            .client
            .get_bucket_encryption()
            .bucket(self.bucket)
            .set_expected_bucket_owner(self.owner())
            .send();
        let current = optional(call(self.stats, S3, "GetBucketEncryption", get).await)?;
        let is_sse_s3 = current.and_then(|c| c.server_side_encryption_configuration).is_some_and(|c| {
            c.rules.iter().any(|r| {
                r.apply_server_side_encryption_by_default
                    .as_ref()
                    .is_some_and(|d| d.sse_algorithm == ServerSideEncryption::Aes256)
            })
        });
        if is_sse_s3 {
            return Ok(Change::Unchanged);
        }
        self.put_encryption().await
    }

    /// Sets default encryption with SSE-S3, without reading first (a bucket this pass created).
    pub async fn put_encryption(&self) -> Result<Change, AwsError> {
        let by_default = ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::Aes256)
            .build()
            .map_err(|e| invalid("PutBucketEncryption", e))?;
        let configuration = ServerSideEncryptionConfiguration::builder()
            .rules(
                ServerSideEncryptionRule::builder()
                    .apply_server_side_encryption_by_default(by_default)
                    .build(),
            )
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
