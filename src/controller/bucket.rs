//! The Bucket controller: `identity -> ensure bucket and settings -> status`, and deletion that never
//! deletes data.
//!
//! Every setting (tags, SSE-S3 encryption, public access block, `BucketOwnerEnforced`, bucket policy) is
//! read and repaired on each pass, so a periodic resync heals drift; a bucket already right costs reads
//! only. Deletion waits for the Bucket's bindings and service keys to go, then deletes the AWS bucket
//! only if it is empty (or leaves it, with `Retain`).

use std::sync::Arc;

use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::Event as Finalizer;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::class::class_of;
use super::context::SharedWatch;
use super::error::{error_policy, timed_out};
use super::events::{self, reason};
use super::finalizer::finalized;
use super::memo::{Settled, Touch, looks_converged};
use super::status::{conditions_after, ready_or_held};
use super::{Context, Error, ReconcileError};
use crate::api::{
    Bucket, BucketBinding, BucketClass, BucketServiceKey, BucketStatus, ClassVersioning, DeletionPolicy,
};
use crate::aws::ErrorKind;
use crate::aws::s3::{Change, Encryption, PublicAccessBlock};
use crate::desired::class::{self, Class};
use crate::desired::conditions::{self, Observation, reasons};
use crate::desired::names::{self, Owner, Ownership};
use crate::desired::policy;

/// The finalizer that keeps a Bucket until its AWS bucket is dealt with.
pub const FINALIZER: &str = "buckets.bucketbroker.io/finalizer";

const KIND: &str = "Bucket";

/// How many objects deletion counts at most to tell a person what is left.
const COUNT_LIMIT: i32 = 1000;

/// Runs the Bucket controller until shutdown.
pub async fn run(
    ctx: Arc<Context>,
    buckets: &SharedWatch<Bucket>,
    classes: &SharedWatch<BucketClass>,
    (bindings, keys): (&SharedWatch<BucketBinding>, &SharedWatch<BucketServiceKey>),
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    ctx.watch_cache(KIND, buckets.store.clone(), |b: &Bucket| {
        b.status.as_ref().is_some_and(|s| crate::desired::conditions::is_true(&s.conditions, "Ready"))
    });
    let (store, on_class) = (buckets.store.clone(), ctx.clone());
    let (on_binding, on_key) = (counted(&buckets.store, &ctx), counted(&buckets.store, &ctx));
    Controller::for_shared_stream(buckets.changes_by_others(ctx.clone()), buckets.store.clone())
        // A Bucket waiting for its bindings and service keys to go is woken as soon as one is gone.
        .reconcile_on(ctx.bucket_wakes())
        // A changed class applies to its Buckets at once: those naming it, and those naming none (whose
        // default it may have become, or stopped being).
        .watches_shared_stream(classes.changes(), move |class: Arc<BucketClass>| {
            let name = class.name_any();
            let version = class.metadata.resource_version.clone().unwrap_or_default();
            store
                .state()
                .into_iter()
                .filter(|b| b.spec.class_name.as_ref().is_none_or(|n| *n == name))
                .filter(|b| {
                    on_class
                        .memo
                        .touch(b.metadata.uid.as_deref().unwrap_or_default(), Touch::Class(version.clone()))
                })
                .map(|b| ObjectRef::from_obj(b.as_ref()))
                .collect::<Vec<_>>()
        })
        // A binding or service key that comes or goes changes its Bucket's count; other changes to it do not.
        .watches_shared_stream(bindings.changes(), move |b: Arc<BucketBinding>| {
            on_binding(b.namespace(), &b.spec.bucket_ref.name)
        })
        .watches_shared_stream(keys.changes(), move |k: Arc<BucketServiceKey>| {
            on_key(k.namespace(), &k.spec.bucket_ref.name)
        })
        // Every due reconcile starts; the passes are bounded, in turns by namespace, by `Context::reconcile`.
        .with_config(kube::runtime::controller::Config::default().concurrency(0))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, |obj, err, ctx| error_policy(KIND, obj.as_ref(), err, &ctx), ctx)
        .for_each(|_| async {})
        .await;
}

/// Maps a binding's or service key's change (namespace, Bucket name) to its Bucket when the Bucket's status
/// counts other than the cache does: only arrivals and departures wake it, never status writes.
fn counted(
    buckets: &kube::runtime::reflector::Store<Bucket>,
    ctx: &Arc<Context>,
) -> impl Fn(Option<String>, &str) -> Option<ObjectRef<Bucket>> + Send + Sync + 'static {
    let (buckets, ctx) = (buckets.clone(), ctx.clone());
    move |namespace, name| {
        let namespace = namespace?;
        let reference = ObjectRef::new(name).within(&namespace);
        let bucket = buckets.get(&reference)?;
        let count = ctx.bindings_of(&namespace, name)?;
        let shown = bucket.status.as_ref().and_then(|s| s.bindings);
        let uid = bucket.metadata.uid.as_deref().unwrap_or_default();
        (shown != Some(count) && ctx.memo.touch(uid, Touch::Bindings(count))).then_some(reference)
    }
}

async fn reconcile(bucket: Arc<Bucket>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let api = ctx.api::<Bucket>(&bucket.namespace().unwrap_or_default());
    let converged = bucket
        .status
        .as_ref()
        .is_some_and(|s| looks_converged(&bucket.metadata, s.observed_generation, &s.conditions));
    let pass = finalized(&api, &ctx.memo, FINALIZER, bucket.clone(), |event| async {
        match event {
            Finalizer::Apply(bucket) => apply(&bucket, &ctx).await,
            Finalizer::Cleanup(bucket) => {
                let released = cleanup(&bucket, &ctx).await;
                if released.is_ok() {
                    ctx.memo.forget(bucket.metadata.uid.as_deref().unwrap_or_default());
                }
                released
            }
        }
    });
    let status = super::memo::status_hash(bucket.status.as_ref());
    let result = ctx.reconcile(KIND, bucket.as_ref(), status, converged, pass).await;
    // A pass stopped for taking too long never reached its own report: it is made here, within the same
    // limit, with the rest of the status as it was (nothing that needs AWS: AWS may be what does not answer).
    if let Some(limit) = timed_out(&result)
        && bucket.metadata.deletion_timestamp.is_none()
    {
        let as_it_was = |failed: Observation| {
            let mut status = bucket.status.clone().unwrap_or_default();
            status.conditions = conditions_after(&status.conditions, &[failed], bucket.metadata.generation);
            status
        };
        let err = Error::Timeout(limit);
        let _ = tokio::time::timeout(limit, report_failure(&bucket, &ctx, &err, as_it_was)).await;
    }
    result
}

/// Where the AWS bucket is: recorded in status before the bucket is created, then reused.
struct Location {
    bucket: String,
    region: String,
    arn: String,
    endpoint: String,
}

/// The bucket's name derives from the uid. A different name in status (tenant-writable) is used only when
/// AWS shows that bucket carries this Bucket's uid tag (made under an earlier `--bucket-prefix`); any other
/// is ignored, reported, and overwritten by the next status write.
async fn location(bucket: &Bucket, ctx: &Context, class: Option<&Class>) -> Result<Location, Error> {
    let uid = Owner::of(KIND, &bucket.metadata).map_err(Error::Incomplete)?.uid;
    let status = bucket.status.as_ref();
    let derived = names::bucket_name(&ctx.settings.bucket_prefix, uid);
    // The region decides no access: a wrong one in status only makes this Bucket's own calls fail.
    let region = status
        .and_then(|s| s.region.clone())
        .or_else(|| bucket.spec.region.clone())
        .or_else(|| class.and_then(|c| c.spec.region.clone()))
        .unwrap_or_else(|| ctx.settings.region.clone());
    let mut name = derived.clone();
    if let Some(hint) = status.and_then(|s| s.bucket_name.as_deref()).filter(|h| *h != derived) {
        let ops = ctx.bucket_ops(&region, hint);
        let tags = match ops.tags().await {
            // Another account's bucket (S3 refuses the expected owner) is not ours, whatever its tags.
            Err(err) if err.is(ErrorKind::AccessDenied) => None,
            tags => tags?,
        };
        match tags {
            Some(tags)
                if names::ownership(&tags, uid, &ctx.settings.cluster()) == Ownership::Ours
                    && ops.in_account().await? =>
            {
                name = hint.to_owned()
            }
            _ => {
                let message = format!(
                    "status.bucketName names {hint}, which AWS does not show as this Bucket's; it is ignored (the bucket is {derived})"
                );
                tracing::warn!(namespace = ?bucket.namespace(), name = %bucket.name_any(), hint, "Ignored a bucket name in status");
                ctx.event(
                    &bucket.object_ref(&()),
                    EventType::Warning,
                    reasons::STATUS_IGNORED,
                    "Provision",
                    message,
                )
                .await;
            }
        }
    }
    let arn = names::bucket_arn(names::partition(&region), &name);
    let endpoint = names::bucket_endpoint(&name, &region, ctx.aws.endpoint_url.as_deref());
    Ok(Location { bucket: name, region, arn, endpoint })
}

/// The status after `observation`. `observedGeneration` moves only when this generation's spec was fully
/// applied, or found to need a person ([`conditions::handled`]).
fn status_for(
    ctx: &Context,
    bucket: &Bucket,
    location: &Location,
    class: Option<&Class>,
    observation: Observation,
    applied: bool,
) -> BucketStatus {
    let current = bucket.status.clone().unwrap_or_default();
    let generation = bucket.metadata.generation;
    let handled = conditions::handled(applied, std::slice::from_ref(&observation));
    let observed_generation = if handled { generation } else { current.observed_generation };
    BucketStatus {
        bucket_name: Some(location.bucket.clone()),
        region: Some(location.region.clone()),
        arn: Some(location.arn.clone()),
        endpoint: Some(location.endpoint.clone()),
        // Never a URL that cannot work: not while the account blocks public access, nor the class forbids it.
        public_url: (is_public(bucket, class)
            && observation.reason != reasons::PUBLIC_ACCESS_BLOCKED_BY_ACCOUNT)
            .then(|| location.endpoint.clone()),
        class: class.map(|c| c.name.clone()),
        versioning: class.and_then(|c| class::versioning(&bucket.spec, c)).map(|v| format!("{v:?}")),
        bindings: ctx
            .bindings_of(&bucket.namespace().unwrap_or_default(), &bucket.name_any())
            .or(current.bindings),
        observed_generation,
        conditions: conditions_after(&current.conditions, &[observation], generation),
    }
}

async fn write_status(bucket: &Bucket, ctx: &Context, status: &BucketStatus) -> Result<(), Error> {
    let api = ctx.api::<Bucket>(&bucket.namespace().unwrap_or_default());
    super::status::write_status(ctx, &api, bucket, bucket.status.as_ref(), status).await
}

/// Public as asked, and as the class allows (a class that stops allowing it makes the bucket private).
fn is_public(bucket: &Bucket, class: Option<&Class>) -> bool {
    bucket.spec.public && class.is_some_and(|c| c.spec.allow_public)
}

async fn apply(bucket: &Bucket, ctx: &Context) -> Result<Action, Error> {
    let namespace = bucket.namespace().unwrap_or_default();
    // What the class refuses is reported, and nothing is created for it; a bucket that exists already is
    // still kept within its class (made private, say), never left looser.
    let (class, refused) = match class_of(ctx, &bucket.spec, &namespace).await? {
        Ok(class) => {
            let refused = class::check_bucket(&bucket.spec, &class)
                .and_then(|()| class::check_features(&bucket.spec, &class))
                .err();
            (Some(class), refused)
        }
        Err(refusal) => (None, Some(refusal)),
    };
    let class = class.as_ref();
    // The name derives from the uid, so an interrupted reconcile finds the same bucket again: status only
    // displays it, and is written once the pass is done.
    let location = location(bucket, ctx, class).await?;
    let reference = bucket.object_ref(&());
    let owner_uid = bucket.metadata.uid.as_deref().unwrap_or_default();

    let provisioned = match class {
        Some(class) => provision(bucket, ctx, &location, class, refused.is_none()).await,
        None => Ok(Vec::new()),
    };
    let provisioned = match provisioned {
        Ok(changes) => {
            if !changes.is_empty() {
                let steps: Vec<&str> = changes.iter().map(|c| c.reason).collect();
                tracing::info!(namespace = ?bucket.namespace(), name = %bucket.name_any(), bucket = %location.bucket, changes = ?steps, "Provisioned bucket");
                ctx.changes(&reference, "Provision", &changes).await;
            }
            match refused {
                Some(refusal) => Err(Error::from(refusal)),
                None => {
                    let current = bucket.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
                    let ready = Observation::ready(reasons::PROVISIONED, ready_message(bucket, ctx, class));
                    let (observation, held) = ready_or_held(current, ready.clone());
                    let mut written = write_status(
                        bucket,
                        ctx,
                        &status_for(ctx, bucket, &location, class, observation, !held),
                    )
                    .await;
                    if held && written.is_ok() {
                        // That write kept every field: the CRD was fixed, so success can be reported now.
                        let status = status_for(ctx, bucket, &location, class, ready, true);
                        written = write_status(bucket, ctx, &status).await;
                    }
                    let after = ctx.resync_after(owner_uid);
                    written.map(|()| {
                        ctx.memo.settle(bucket, Settled { converged: true, after, user: None });
                        Action::requeue(after)
                    })
                }
            }
        }
        Err(err) => Err(err),
    };
    let Err(err) = provisioned else { return provisioned };
    let err = unknown_region(err, &location.region);
    report_failure(bucket, ctx, &err, |failed| status_for(ctx, bucket, &location, class, failed, false))
        .await;
    Err(err)
}

/// Reports a failed pass to the Bucket's users: a Warning event, and Ready False in the status `status`
/// makes of the observation. Nothing for a race (the Bucket changed or went away meanwhile: the next pass
/// settles it) or a transient failure's first times (a blip).
async fn report_failure(
    bucket: &Bucket,
    ctx: &Context,
    err: &Error,
    status: impl FnOnce(Observation) -> BucketStatus,
) {
    if err.is_race() || ctx.quiet_failure(bucket, err) {
        return;
    }
    let message = err.to_string();
    ctx.event(&bucket.object_ref(&()), EventType::Warning, err.reason(), "Provision", message.clone()).await;
    let status = status(Observation::not_ready(err.reason(), message));
    // The failure that led here is what the backoff and the log report, whatever this write does.
    if let Err(write) = write_status(bucket, ctx, &status).await {
        tracing::debug!(error = %write, "Failed to report a failure in status");
    }
}

/// A region AWS does not have fails like the network (its endpoint does not exist), or, sent to an
/// endpoint that exists, with S3's `InvalidLocationConstraint`: either way the region is what to fix, and
/// the condition says so instead of blaming the network.
fn unknown_region(err: Error, region: &str) -> Error {
    let Error::Aws(aws) = &err else { return err };
    let refused = aws.has_code("InvalidLocationConstraint");
    let unreachable = aws.is(ErrorKind::Transient) && aws.status.is_none() && !names::is_known_region(region);
    if !refused && !unreachable {
        return err;
    }
    tracing::info!(region, error = %aws, "Took a failed call for a region AWS does not have");
    let evidence = if refused {
        "S3 refuses it as a bucket location (InvalidLocationConstraint)"
    } else {
        "its endpoint does not answer, and it is none of the regions this controller knows"
    };
    Error::InvalidSpec(format!(
        "AWS has no region {region}: {evidence}. The region comes from spec.region, else the BucketClass's \
         region, else the controller's --region; regions look like eu-west-2 or us-east-1. spec.region cannot \
         be changed: delete and re-create the Bucket with a region AWS has, or fix the class"
    ))
}

fn ready_message(bucket: &Bucket, ctx: &Context, class: Option<&Class>) -> String {
    let access = if is_public(bucket, class) { "public-read" } else { "private" };
    let transport = if ctx.settings.require_tls { ", TLS only" } else { "" };
    let encryption = match class.map(|c| class::features(&bucket.spec, c).encryption) {
        Some(crate::aws::s3::Encryption::SseKms { .. }) => "SSE-KMS with the class's key".to_owned(),
        _ => "SSE-S3".to_owned(),
    };
    let class = class.map(|c| format!(" (class {})", c.name)).unwrap_or_default();
    format!("the bucket is {access}, encrypted with {encryption}{transport}{class}")
}

/// Ensures the bucket and each of its settings; returns what had to change.
///
/// `create`: whether a missing bucket may be created (not while the class refuses what the Bucket asks).
async fn provision(
    bucket: &Bucket,
    ctx: &Context,
    location: &Location,
    class: &Class,
    create: bool,
) -> Result<Vec<events::Change>, Error> {
    let owner = Owner::of(KIND, &bucket.metadata).map_err(Error::Incomplete)?;
    let ops = ctx.bucket_ops(&location.region, &location.bucket);
    let mut changes = Vec::new();
    let name = &location.bucket;

    let current_tags = match ops.tags().await {
        // S3 answers 403 for a bucket of another account (ExpectedBucketOwner), as for a permission we
        // lack: creating the bucket tells the two apart.
        Err(err) if err.is(ErrorKind::AccessDenied) => {
            return match ops.create(&location.region).await {
                Err(taken) if taken.has_code("BucketAlreadyExists") => Err(name_taken(&location.bucket)),
                Err(other) if !other.is(ErrorKind::AccessDenied) => Err(other.into()),
                _ => Err(err.into()),
            };
        }
        tags => tags?,
    };
    let existed = current_tags.is_some();
    if !existed && !create {
        return Ok(changes);
    }
    // A bucket this pass created has AWS's defaults: its settings are written without reading them first.
    let created = !existed
        && match ops.create(&location.region).await {
            Ok(change) => change == Change::Created,
            Err(err) if err.has_code("BucketAlreadyExists") => return Err(name_taken(&location.bucket)),
            Err(err) => return Err(err.into()),
        };
    if created {
        let region = &location.region;
        changes.push(events::Change::new(
            reason::BUCKET_CREATED,
            format!("Created S3 bucket {name} in region {region}."),
        ));
    }
    let current_tags = current_tags.unwrap_or_default();
    let derived = names::bucket_name(&ctx.settings.bucket_prefix, owner.uid);
    if !names::may_manage(&current_tags, owner.uid, &ctx.settings.cluster(), &location.bucket, &derived) {
        return Err(Error::Conflict(format!(
            "the AWS bucket {} is not tagged as belonging to this Bucket; it is left untouched",
            location.bucket
        )));
    }
    // An untagged bucket with our name is adopted only if it is this account's: a create of ours that was
    // interrupted before tagging, not a bucket someone made elsewhere under the same name.
    let untagged = names::ownership(&current_tags, owner.uid, &ctx.settings.cluster()) == Ownership::Untagged;
    if existed && untagged && !ops.in_account().await? {
        return Err(name_taken(&location.bucket));
    }
    // The class's tags under ours: a class cannot set the controller's own (its schema refuses them).
    let mut ours = class.tags();
    ours.extend(names::tags(&owner, &ctx.settings.deploy_env, &ctx.settings.cluster()));
    let desired_tags = merged_tags(&current_tags, ours);
    let public = is_public(bucket, Some(class));
    let access = PublicAccessBlock::for_bucket(public);
    let features = class::features(&bucket.spec, class);
    if created {
        ops.ensure_tags(&[], &desired_tags).await?;
        ops.put_encryption(&features.encryption).await?;
        ops.put_public_access_block(access).await?;
        ops.put_owner_enforced().await?;
        write_policy(&ops, public, ctx, location, true).await?;
        ensure_features(&ops, &features, class, Fresh::Created, &mut changes).await?;
        return Ok(changes);
    }
    if ops.ensure_tags(&current_tags, &desired_tags).await? != Change::Unchanged && existed {
        changes
            .push(events::Change::new(reason::BUCKET_TAGGED, format!("Updated the tags of bucket {name}.")));
    }
    if ops.ensure_encryption(&features.encryption).await? != Change::Unchanged && existed {
        // A changed default encryption (another KMS key, say) applies to new objects only: S3 re-encrypts
        // nothing, and the event says so.
        let encryption = match &features.encryption {
            Encryption::SseS3 => "SSE-S3".to_owned(),
            Encryption::SseKms { key_arn, .. } => format!("SSE-KMS with key {key_arn}"),
        };
        changes.push(events::Change::new(
            reason::ENCRYPTION_UPDATED,
            format!(
                "Set the default encryption of bucket {name} to {encryption}; it applies to new objects, the \
                 objects already there keep theirs."
            ),
        ));
    }
    if ops.ensure_public_access_block(access).await? != Change::Unchanged && existed {
        let what = if public { "allows a public-read bucket policy" } else { "blocks all public access" };
        changes.push(events::Change::new(
            reason::PUBLIC_ACCESS_UPDATED,
            format!("Set the public access block of bucket {name}: it {what}."),
        ));
    }
    if ops.ensure_owner_enforced().await? != Change::Unchanged && existed {
        changes.push(events::Change::new(
            reason::OWNERSHIP_ENFORCED,
            format!("Enforced bucket-owner object ownership on bucket {name}: ACLs are off."),
        ));
    }
    if write_policy(&ops, public, ctx, location, false).await? != Change::Unchanged && existed {
        let what = if public { "anyone may read its objects" } else { "its objects are not public" };
        changes.push(events::Change::new(
            reason::BUCKET_POLICY_UPDATED,
            format!("Updated the bucket policy of bucket {name}: {what}."),
        ));
    }
    let fresh = if existed { Fresh::Existed } else { Fresh::Found };
    ensure_features(&ops, &features, class, fresh, &mut changes).await?;
    Ok(changes)
}

/// How the bucket came to this pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fresh {
    /// This pass created it.
    Created,
    /// It was not found at first, and then existed (a create that found it already ours).
    Found,
    /// It existed when the pass began.
    Existed,
}

/// The class's versioning, lifecycle rules and CORS, each written only when it differs. What is taken away
/// (versioning suspended, CORS rules removed because the class allows none) is an event of its own that
/// says why.
async fn ensure_features(
    ops: &crate::aws::s3::BucketOps<'_>,
    features: &class::Features,
    class: &Class,
    fresh: Fresh,
    changes: &mut Vec<events::Change>,
) -> Result<(), Error> {
    let (name, bucket) = (&class.name, ops.bucket);
    // A bucket this pass created has S3's defaults: never versioned (which behaves as suspended), no
    // lifecycle rules, no CORS. What asks for no more than that needs no call; anything else is read and
    // written as for any bucket.
    let created = fresh == Fresh::Created;
    let unversioned = matches!(features.versioning, None | Some(crate::aws::s3::Versioning::Suspended));
    let versioning = if created && unversioned {
        Change::Unchanged
    } else {
        ops.ensure_versioning(features.versioning).await?
    };
    if versioning != Change::Unchanged {
        if features.versioning == Some(crate::aws::s3::Versioning::Enabled) {
            changes.push(events::Change::new(
                reason::VERSIONING_ENABLED,
                format!("Enabled versioning on bucket {bucket}."),
            ));
        } else {
            let why = match class.spec.versioning {
                Some(ClassVersioning::TenantChoice) => "its spec.versioning asks for it".to_owned(),
                Some(ClassVersioning::Suspended) => {
                    format!("the BucketClass {name} has versioning Suspended")
                }
                _ => format!("the BucketClass {name} keeps its buckets unversioned"),
            };
            let note = format!(
                "Suspended versioning on bucket {bucket}: {why}. S3 cannot turn versioning off; the versions \
                 already kept stay."
            );
            changes.push(events::Change::new(reason::VERSIONING_SUSPENDED, note));
        }
    }
    let lifecycle = if created && features.lifecycle == crate::aws::s3::Lifecycle::default() {
        Change::Unchanged
    } else {
        ops.ensure_lifecycle(&features.lifecycle).await?
    };
    if lifecycle != Change::Unchanged {
        let verb = if fresh == Fresh::Existed { "Updated" } else { "Set" };
        changes.push(events::Change::new(
            reason::LIFECYCLE_UPDATED,
            format!("{verb} the lifecycle rules of bucket {bucket}."),
        ));
    }
    if let Some(cors) = features.cors.as_ref().filter(|rules| !(created && rules.is_empty())) {
        match ops.ensure_cors(cors).await? {
            Change::Unchanged => {}
            Change::Deleted if !class.spec.allow_cors => changes.push(events::Change::new(
                reason::CORS_REMOVED,
                format!(
                    "Removed the CORS rules of bucket {bucket}: the BucketClass {name} does not allow CORS."
                ),
            )),
            Change::Deleted => changes.push(events::Change::new(
                reason::CORS_UPDATED,
                format!("Removed the CORS rules of bucket {bucket}: its spec.cors has none."),
            )),
            _ => changes.push(events::Change::new(
                reason::CORS_UPDATED,
                format!("Set the CORS rules of bucket {bucket} to its spec.cors."),
            )),
        }
    }
    Ok(())
}

/// Writes our statements of the bucket policy (read first unless the bucket was `created` by this pass).
///
/// An account whose Block Public Access forbids public policies refuses a public one with a 403, as S3
/// refuses a permission the controller lacks. Writing the same policy without the public statement tells
/// the two apart (and leaves the bucket private, which is what the account allows): when that is accepted,
/// the Bucket is `PublicAccessBlockedByAccount`, with no public URL; when nothing private is left to write,
/// the two cannot be told apart and the original error stands. An account that only restricts public
/// buckets (`RestrictPublicBuckets`) refuses no write and is not detected: that needs the account's own
/// settings (S3 Control), which this controller does not read.
async fn write_policy(
    ops: &crate::aws::s3::BucketOps<'_>,
    public: bool,
    ctx: &Context,
    location: &Location,
    created: bool,
) -> Result<Change, Error> {
    let desired = policy::bucket_policy(&location.arn, public, ctx.settings.require_tls);
    let written = if created {
        ops.put_policy(desired.as_ref()).await
    } else {
        ops.ensure_policy(desired.as_ref()).await
    };
    match written {
        Err(refused) if public && refused.is(ErrorKind::AccessDenied) => {
            // Written even when it is there already (from an earlier pass refused the same way).
            let private = policy::bucket_policy(&location.arn, false, ctx.settings.require_tls);
            match ops.rewrite_policy(private.as_ref()).await {
                Ok(change) if change != Change::Unchanged => {
                    Err(Error::PublicAccessBlockedByAccount(format!(
                        "the AWS account's Block Public Access settings forbid public bucket policies, so the bucket \
                     {} stays private and has no public URL; ask the platform team, or set spec.public to false",
                        location.bucket
                    )))
                }
                _ => Err(refused.into()),
            }
        }
        written => Ok(written?),
    }
}

fn name_taken(bucket: &str) -> Error {
    Error::BucketNameTaken(format!(
        "the bucket name {bucket} belongs to another AWS account; nothing was created or changed. Bucket \
         names come from the Bucket's uid: delete this Bucket and create it again to get a new name"
    ))
}

/// Our tags over whatever else is there: tags other teams add (cost allocation, say) are kept.
fn merged_tags(current: &[(String, String)], ours: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> =
        current.iter().filter(|(k, _)| !ours.iter().any(|(key, _)| key == k)).cloned().collect();
    tags.extend(ours);
    tags.sort();
    tags
}

async fn cleanup(bucket: &Bucket, ctx: &Context) -> Result<Action, Error> {
    let Owner { uid, namespace, name, .. } = Owner::of(KIND, &bucket.metadata).map_err(Error::Incomplete)?;
    let reference = bucket.object_ref(&());
    // The class may be gone by now: then the Bucket's own policy, or Delete (which never deletes data).
    let class = class_of(ctx, &bucket.spec, namespace).await?.ok();
    let class = class.as_ref();
    let location = location(bucket, ctx, class).await?;
    let dependents = dependents(ctx, namespace, name).await?;
    if !dependents.is_empty() {
        let message = format!(
            "waiting for {} binding(s) and service key(s) to be deleted first: {}",
            dependents.len(),
            dependents.join(", ")
        );
        return blocked(bucket, ctx, class, &location, message).await;
    }
    if class::deletion_policy(&bucket.spec, class) == DeletionPolicy::Retain {
        release(bucket, ctx, &location).await?;
        tracing::info!(namespace, name, bucket = %location.bucket, "Released bucket (deletionPolicy Retain)");
        return Ok(Action::await_change());
    }
    let bucket_name = location.bucket.clone();
    let ops = ctx.bucket_ops(&location.region, &bucket_name);
    let tags = match ops.tags().await {
        // Another account's bucket (a name that was taken), or a permission we lack on our own.
        Err(err) if err.is(ErrorKind::AccessDenied) && !ops.in_account().await? => {
            tracing::info!(namespace, name, bucket = %bucket_name, "Released a Bucket whose name is another account's bucket");
            return Ok(Action::await_change());
        }
        tags => tags?,
    };
    let Some(tags) = tags else {
        return Ok(Action::await_change());
    };
    let derived = names::bucket_name(&ctx.settings.bucket_prefix, uid);
    let untagged = names::ownership(&tags, uid, &ctx.settings.cluster()) == Ownership::Untagged;
    if !names::may_manage(&tags, uid, &ctx.settings.cluster(), &bucket_name, &derived)
        || (untagged && !ops.in_account().await?)
    {
        tracing::warn!(namespace, name, bucket = %bucket_name, "Released a bucket not tagged for this Bucket without deleting it");
        return Ok(Action::await_change());
    }
    let objects = ops.count_objects(COUNT_LIMIT).await?;
    if objects.count > 0 {
        let message = format!(
            "the bucket {bucket_name} still holds {objects}; it is deleted once it is empty, or released \
                 with its data if spec.deletionPolicy is set to Retain"
        );
        return blocked(bucket, ctx, class, &location, message).await;
    }
    match ops.delete().await {
        Ok(_) => {
            tracing::info!(namespace, name, bucket = %bucket_name, "Deleted bucket");
            ctx.event(
                &reference,
                EventType::Normal,
                "Deleted",
                "Delete",
                format!("deleted bucket {bucket_name}"),
            )
            .await;
            Ok(Action::await_change())
        }
        // Object versions or unfinished multipart uploads that a plain listing does not show.
        Err(err) if err.has_code("BucketNotEmpty") => {
            let message = format!(
                "the bucket {bucket_name} is not empty (object versions or unfinished uploads remain)"
            );
            blocked(bucket, ctx, class, &location, message).await
        }
        Err(err) => Err(err.into()),
    }
}

/// Tags the AWS bucket of a Bucket deleted with `deletionPolicy: Retain` as released, so that the orphan
/// sweeper knows its data was kept on purpose. A bucket that is gone, or not ours, is left as it is.
async fn release(bucket: &Bucket, ctx: &Context, location: &Location) -> Result<(), Error> {
    let uid = Owner::of(KIND, &bucket.metadata).map_err(Error::Incomplete)?.uid;
    let ops = ctx.bucket_ops(&location.region, &location.bucket);
    let tags = match ops.tags().await {
        Err(err) if err.is(ErrorKind::AccessDenied) && !ops.in_account().await? => return Ok(()),
        tags => tags?,
    };
    let Some(tags) = tags else { return Ok(()) };
    if names::ownership(&tags, uid, &ctx.settings.cluster()) != Ownership::Ours
        || tags.iter().any(|(k, _)| k == names::tag::RELEASED)
    {
        return Ok(());
    }
    let at = k8s_openapi::jiff::Timestamp::now().round(k8s_openapi::jiff::Unit::Second).unwrap_or_default();
    let released = merged_tags(&tags, vec![(names::tag::RELEASED.to_owned(), at.to_string())]);
    ops.ensure_tags(&tags, &released).await?;
    let message = format!("released bucket {} with its data (deletionPolicy Retain)", location.bucket);
    ctx.event(&bucket.object_ref(&()), EventType::Normal, "Released", "Delete", message).await;
    Ok(())
}

/// Keeps the Bucket with Ready=False, reason DeletionBlocked, and retries with backoff.
async fn blocked(
    bucket: &Bucket,
    ctx: &Context,
    class: Option<&Class>,
    location: &Location,
    message: String,
) -> Result<Action, Error> {
    let already = bucket
        .status
        .as_ref()
        .and_then(|s| crate::api::find_condition(&s.conditions, "Ready"))
        .is_some_and(|c| c.reason == reasons::DELETION_BLOCKED && c.message == message);
    if !already {
        let reference = bucket.object_ref(&());
        ctx.event(&reference, EventType::Warning, reasons::DELETION_BLOCKED, "Delete", message.clone()).await;
    }
    let status = status_for(
        ctx,
        bucket,
        location,
        class,
        Observation::not_ready(reasons::DELETION_BLOCKED, message.clone()),
        false,
    );
    write_status(bucket, ctx, &status).await?;
    Err(Error::DeletionBlocked(message))
}

/// The bindings and service keys that still reference a Bucket, as `Kind/name`.
async fn dependents(ctx: &Context, namespace: &str, bucket: &str) -> Result<Vec<String>, Error> {
    let params = ListParams::default();
    let bindings = ctx.api::<BucketBinding>(namespace).list(&params).await?;
    let keys = ctx.api::<BucketServiceKey>(namespace).list(&params).await?;
    let names = bindings
        .items
        .iter()
        .filter(|b| b.spec.bucket_ref.name == bucket)
        .map(|b| format!("BucketBinding/{}", b.name_any()))
        .chain(
            keys.items
                .iter()
                .filter(|k| k.spec.bucket_ref.name == bucket)
                .map(|k| format!("BucketServiceKey/{}", k.name_any())),
        )
        .collect();
    Ok(names)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_region_aws_does_not_have_is_not_blamed_on_the_network() {
        use crate::aws::{AwsError, ErrorKind};
        let failure = |kind, code: Option<&str>, status| {
            Error::Aws(AwsError {
                service: "s3",
                operation: "GetBucketTagging",
                kind,
                code: code.map(str::to_owned),
                status,
                message: "cannot reach AWS (dns error): check network access to the endpoint".to_owned(),
            })
        };
        let unreachable = || failure(ErrorKind::Transient, None, None);
        let said = super::unknown_region(unreachable(), "eu-fake-1");
        assert_eq!(said.reason(), "InvalidSpec");
        let message = said.to_string();
        assert!(
            message.starts_with("AWS has no region eu-fake-1: its endpoint does not answer"),
            "{message}"
        );
        assert!(!message.contains("network"), "{message}");
        assert!(message.contains("delete and re-create the Bucket"), "{message}");
        // A region AWS has, unreachable: the network it is.
        assert_eq!(super::unknown_region(unreachable(), "eu-west-2").reason(), "AwsError");
        // S3 refusing the location, whatever the list says.
        let refused = failure(ErrorKind::Invalid, Some("InvalidLocationConstraint"), Some(400));
        assert_eq!(super::unknown_region(refused, "eu-west-2").reason(), "InvalidSpec");
        // Throttling in an unknown region is not about the region.
        let throttled = failure(ErrorKind::Transient, Some("SlowDown"), Some(503));
        assert_eq!(super::unknown_region(throttled, "eu-fake-1").reason(), "AwsError");
    }

    use super::*;
    use crate::desired::names::tag;

    #[test]
    fn foreign_tags_are_kept_and_ours_win() {
        let current =
            vec![("cost-centre".to_owned(), "42".to_owned()), (tag::NAME.to_owned(), "stale".to_owned())];
        let ours = vec![(tag::NAME.to_owned(), "assets".to_owned()), (tag::UID.to_owned(), "u".to_owned())];
        let merged = merged_tags(&current, ours);
        assert_eq!(
            merged,
            [
                (tag::NAME.to_owned(), "assets".to_owned()),
                (tag::UID.to_owned(), "u".to_owned()),
                ("cost-centre".to_owned(), "42".to_owned()),
            ]
        );
    }
}
