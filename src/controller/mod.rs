//! The controllers: one per kind, sharing a [`Context`].
//!
//! Each reconcile follows the same pipeline: the finalizer helper splits it into `apply` and `cleanup`;
//! `apply` records the AWS identity (derived from the uid) in status before creating anything, then
//! ensures every AWS setting (reading first, writing only on a difference), then writes status with
//! server-side apply, skipped when nothing changed. Any reconcile can stop at any line and run again.
//!
//! - [`bucket`]: the Bucket controller.
//! - `app_secret`: the `<app>-vcap-services` Secret shared by the bindings of one app.
//! - [`credentials`]: the logic BucketBinding ([`binding`]) and BucketServiceKey ([`service_key`]) share.
//! - `context`: what every reconcile shares (settings, clients, metrics, events, backoff).
//! - [`events`]: the event recorder, and the reasons of the events that report a change.
//! - `error`: the reconcile error, its static reasons, and the requeue after a failure.
//! - `status`: conditions and the status write.
//! - [`memo`]: what the process knows it did, which makes the work event-driven: echoes of its own writes
//!   start no pass, settled objects cost nothing until due, and new work goes before periodic verification.

mod app_secret;
pub mod binding;
pub mod bucket;
pub mod class;
mod context;
pub mod credentials;
mod error;
pub mod events;
mod fair;
mod finalizer;
pub mod memo;
pub mod service_key;
mod status;

use std::sync::Arc;

use crate::api::{Bucket, BucketBinding, BucketClass, BucketServiceKey};
use context::SharedWatch;
pub use context::{Context, KEY_PROPAGATION_TIMEOUT, ORPHAN_GRACE, PASS_TIMEOUT, Settings};
pub use error::{Error, ReconcileError};

/// Runs every controller until `shutdown` turns true. One watch per kind feeds them all.
pub async fn run_all(ctx: Arc<Context>, shutdown: tokio::sync::watch::Receiver<bool>) {
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Buckets: their controller and both credential controllers; bindings and keys: their own controller.
    let namespace = &ctx.settings.namespace;
    let (buckets, watching_buckets) = SharedWatch::<Bucket>::start(ctx.api_for(namespace), 3);
    // Bindings and keys also feed the Bucket controller, which counts them: deletions are changes too.
    let (bindings, watching_bindings) =
        SharedWatch::<BucketBinding>::start_with_deletions(ctx.api_for(namespace), 2);
    let (keys, watching_keys) =
        SharedWatch::<BucketServiceKey>::start_with_deletions(ctx.api_for(namespace), 2);
    // BucketClasses are cluster-scoped: every controller decides with them, and a change wakes the Buckets
    // (and credentials) of the class.
    let (classes, watching_classes) =
        SharedWatch::<BucketClass>::start_with_deletions(kube::Api::all(ctx.client.clone()), 3);
    let watches = async {
        tokio::join!(watching_buckets, watching_bindings, watching_keys, watching_classes);
    };
    let controllers = async {
        // No decision before the classes are known: a Bucket naming a class is not refused as ClassNotFound
        // while the cache is still filling.
        if classes.store.wait_until_ready().await.is_err() {
            return;
        }
        ctx.set_classes(classes.store.clone());
        // Nor is a Bucket's count of bindings written from a cache still filling (a restart would write
        // every count twice: short, then right).
        if bindings.store.wait_until_ready().await.is_err() || keys.store.wait_until_ready().await.is_err() {
            return;
        }
        ctx.set_credentials(bindings.store.clone(), keys.store.clone());
        tokio::join!(
            bucket::run(ctx.clone(), &buckets, &classes, (&bindings, &keys), stopped(shutdown.clone())),
            credentials::run(ctx.clone(), &bindings, &buckets, &classes, stopped(shutdown.clone())),
            credentials::run(ctx.clone(), &keys, &buckets, &classes, stopped(shutdown.clone())),
        );
    };
    // The watches run as long as the controllers (which finish their reconciles in flight first).
    tokio::select! {
        _ = controllers => {}
        _ = watches => {}
    }
}

/// The field manager of every write, and the reporting controller of every event.
pub const MANAGER: &str = "bucket-broker";
