//! Which BucketClass a Bucket has, and what that class allows: decided from the Bucket's spec, the classes
//! in the cluster and its namespace's labels, without I/O.
//!
//! A Bucket names its class (`spec.className`), or gets the class annotated as the default (the newest,
//! when several are, as Kubernetes does for StorageClasses), or, when none is, the built-in default made
//! from the controller's flags, which allows what the controller allowed before classes existed.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::{
    BucketClass, BucketClassSpec, BucketSpec, BucketVersioning, ClassVersioning, DEFAULT_CLASS_ANNOTATION,
    DeletionPolicy, EncryptionType,
};
use crate::aws::s3::{CorsRule, Encryption, Lifecycle, Versioning};

/// The name `status.class` shows for the built-in default (not a valid object name: no class can take it).
pub const BUILT_IN: &str = "(built-in)";

/// The class a Bucket gets, and what it allows.
#[derive(Clone, Debug, PartialEq)]
pub struct Class {
    /// The BucketClass's name, or [`BUILT_IN`].
    pub name: String,
    pub spec: BucketClassSpec,
}

impl Class {
    /// The built-in default: any region (the controller's by default), public buckets and external access
    /// allowed, every namespace, no tags. What the controller did before classes existed.
    pub fn built_in() -> Self {
        Class {
            name: BUILT_IN.to_owned(),
            spec: BucketClassSpec {
                allow_public: true,
                allow_external_access: true,
                ..BucketClassSpec::default()
            },
        }
    }

    /// The class's tags, as AWS tags.
    pub fn tags(&self) -> Vec<(String, String)> {
        self.spec.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Why a Bucket cannot have what it asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The named class does not exist.
    NotFound(String),
    /// The class exists and forbids something the Bucket asks for; the message names the field and class.
    Forbids(String),
}

/// The class of a Bucket: `Err(NotFound)` when the named class does not exist. Whether the class is offered
/// to the Bucket's namespace ([`check_namespace`]) and admits what it asks ([`check_bucket`]) is checked apart.
pub fn choose(spec: &BucketSpec, classes: &[BucketClass], region: &str) -> Result<Class, Refusal> {
    let chosen = match &spec.class_name {
        Some(name) => {
            let found = classes.iter().find(|c| c.metadata.name.as_deref() == Some(name.as_str()));
            found.ok_or_else(|| {
                Refusal::NotFound(format!(
                    "the BucketClass {name} does not exist: ask the platform team which classes there are (kubectl get bucketclasses)"
                ))
            })?
        }
        None => match default_class(classes) {
            Some(class) => class,
            None => return Ok(Class::built_in()),
        },
    };
    let mut spec = chosen.spec.clone();
    spec.region.get_or_insert_with(|| region.to_owned());
    Ok(Class { name: chosen.metadata.name.clone().unwrap_or_default(), spec })
}

/// Whether the class is offered to `namespace`, whose labels are `labels`.
pub fn check_namespace(
    class: &Class,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), Refusal> {
    match &class.spec.namespace_selector {
        Some(selector) if !selects(selector, labels) => Err(Refusal::Forbids(format!(
            "spec.className: the BucketClass {} is not offered to namespace {namespace} (its namespaceSelector leaves it out)",
            class.name
        ))),
        _ => Ok(()),
    }
}

/// The default class: annotated `bucketbroker.io/is-default-class: "true"`; the newest when several are.
pub fn default_class(classes: &[BucketClass]) -> Option<&BucketClass> {
    classes
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter(|c| {
            c.metadata.annotations.as_ref().and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION)).map(String::as_str)
                == Some("true")
        })
        .max_by(|a, b| {
            let at = |c: &BucketClass| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
            at(a).cmp(&at(b)).then_with(|| b.metadata.name.cmp(&a.metadata.name))
        })
}

/// Whether the class's settings admit what the Bucket asks for; the message names the field and class.
pub fn check_bucket(spec: &BucketSpec, class: &Class) -> Result<(), Refusal> {
    let name = &class.name;
    if spec.public && !class.spec.allow_public {
        return Err(Refusal::Forbids(format!(
            "spec.public: the BucketClass {name} does not allow public buckets; the bucket is kept private"
        )));
    }
    if let (Some(asked), Some(region)) = (&spec.region, &class.spec.region)
        && asked != region
    {
        return Err(Refusal::Forbids(format!(
            "spec.region: the BucketClass {name} puts its buckets in {region}, not {asked}; leave spec.region out or choose another class"
        )));
    }
    if let Some(policy) = spec.deletion_policy
        && !class.spec.allows_deletion_policy(policy)
    {
        return Err(Refusal::Forbids(format!(
            "spec.deletionPolicy: the BucketClass {name} does not allow {policy:?}"
        )));
    }
    Ok(())
}

/// What the class decides about the features a Bucket asks for: versioning (unless the class leaves it to
/// the Bucket), object expiry (within the class's ceiling) and CORS (only when the class allows it).
pub fn check_features(spec: &BucketSpec, class: &Class) -> Result<(), Refusal> {
    let name = &class.name;
    if let Some(asked) = spec.versioning {
        // Pinning the value in effect is accepted (a GitOps tool writing a default, say).
        let allowed = match class.spec.versioning {
            Some(ClassVersioning::TenantChoice) => true,
            Some(ClassVersioning::Enabled) => asked == BucketVersioning::Enabled,
            Some(ClassVersioning::Suspended | ClassVersioning::Disabled) | None => {
                asked == BucketVersioning::Suspended
            }
        };
        if !allowed {
            return Err(Refusal::Forbids(format!(
                "spec.versioning: the BucketClass {name} decides versioning ({}); leave spec.versioning out",
                class.spec.versioning.map_or("Disabled".to_owned(), |v| format!("{v:?}"))
            )));
        }
    }
    let ceiling = class.spec.lifecycle.as_ref().and_then(|l| l.max_object_expiration_days);
    if let (Some(asked), Some(ceiling)) = (spec.expire_objects_after_days, ceiling)
        && asked > ceiling
    {
        return Err(Refusal::Forbids(format!(
            "spec.expireObjectsAfterDays: the BucketClass {name} keeps objects at most {ceiling} days, not {asked}"
        )));
    }
    if !spec.cors.is_empty() && !class.spec.allow_cors {
        // As for public: what the class forbids is not only refused but gone ([`features`]).
        let gone = if manages_cors(class) { "; the bucket has none" } else { "" };
        return Err(Refusal::Forbids(format!(
            "spec.cors: the BucketClass {name} does not allow CORS rules{gone}"
        )));
    }
    Ok(())
}

/// What a bucket of the class gets in AWS: its encryption, its versioning (`None`: not touched), its
/// lifecycle rules, and its CORS rules (`None`: not managed).
///
/// Tightening never leaves a bucket looser than its class. A class made by hand that keeps its buckets
/// unversioned (`Disabled`, its default) asks for `Suspended`, S3's nearest to off: a bucket found versioned
/// (a tenant's choice under `TenantChoice`, or a class that changed) is suspended, one never versioned is
/// left as it is (S3 writes nothing for it). One that does not allow CORS asks for no rule at all, so rules
/// written under an earlier class, or by an app with its read-write credentials, are removed. The built-in
/// class touches neither, as the controller did before classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    pub encryption: Encryption,
    pub versioning: Option<Versioning>,
    pub lifecycle: Lifecycle,
    pub cors: Option<Vec<CorsRule>>,
}

/// The versioning the class, or the Bucket where the class leaves it to it, asks for: `None` for a class
/// that keeps its buckets unversioned (`Disabled`) or a Bucket that does not choose. What `status.versioning`
/// shows; [`features`] adds the suspension that keeps an unversioned class's buckets unversioned.
pub fn versioning(spec: &BucketSpec, class: &Class) -> Option<Versioning> {
    match class.spec.versioning {
        Some(ClassVersioning::Enabled) => Some(Versioning::Enabled),
        Some(ClassVersioning::Suspended) => Some(Versioning::Suspended),
        Some(ClassVersioning::TenantChoice) => spec.versioning.map(|v| match v {
            BucketVersioning::Enabled => Versioning::Enabled,
            BucketVersioning::Suspended => Versioning::Suspended,
        }),
        Some(ClassVersioning::Disabled) | None => None,
    }
}

/// Whether the class keeps its buckets unversioned: versioning found enabled on one is suspended.
fn keeps_unversioned(class: &Class) -> bool {
    class.name != BUILT_IN && matches!(class.spec.versioning, Some(ClassVersioning::Disabled) | None)
}

/// Whether the controller decides the CORS rules of the class's buckets: every class made by hand does
/// (its buckets have exactly their `spec.cors`, or none where the class does not allow CORS); the built-in
/// class leaves them to apps, as before classes.
fn manages_cors(class: &Class) -> bool {
    class.name != BUILT_IN
}

/// The features of a Bucket with `spec` in `class`, with what the class forbids left out (the refusal says
/// why): never looser than the class.
pub fn features(spec: &BucketSpec, class: &Class) -> Features {
    let encryption = match &class.spec.encryption {
        Some(e) if e.type_ == EncryptionType::SseKms => Encryption::SseKms {
            key_arn: e.kms_key_arn.clone().unwrap_or_default(),
            bucket_key: e.bucket_key_enabled,
        },
        _ => Encryption::SseS3,
    };
    let versioning =
        versioning(spec, class).or_else(|| keeps_unversioned(class).then_some(Versioning::Suspended));
    // A class made by hand aborts forgotten multipart uploads after 7 days (its schema's default); the
    // built-in class adds no rule, as before classes.
    let class_rules = class.spec.lifecycle.clone().or_else(|| {
        (class.name != BUILT_IN).then(|| serde_json::from_value(serde_json::json!({})).unwrap_or_default())
    });
    let ceiling = class_rules.as_ref().and_then(|l| l.max_object_expiration_days);
    let lifecycle = Lifecycle {
        noncurrent_version_expiration_days: class_rules
            .as_ref()
            .and_then(|l| l.noncurrent_version_expiration_days),
        abort_incomplete_multipart_upload_days: class_rules
            .as_ref()
            .map(|l| l.abort_incomplete_multipart_upload_days),
        expire_objects_after_days: spec
            .expire_objects_after_days
            .filter(|days| ceiling.is_none_or(|c| *days <= c)),
    };
    let allowed: &[crate::api::CorsRule] = if class.spec.allow_cors { &spec.cors } else { &[] };
    let cors = manages_cors(class).then(|| {
        allowed
            .iter()
            .map(|rule| CorsRule {
                allowed_origins: rule.allowed_origins.clone(),
                allowed_methods: rule.allowed_methods.iter().map(|m| format!("{m:?}")).collect(),
                allowed_headers: rule.allowed_headers.clone(),
                expose_headers: rule.expose_headers.clone(),
                max_age_seconds: rule.max_age_seconds,
            })
            .collect()
    });
    Features { encryption, versioning, lifecycle, cors }
}

/// The KMS key the credentials of a bucket of the class need, with SSE-KMS.
pub fn kms_key(class: &Class) -> Option<&str> {
    class
        .spec
        .encryption
        .as_ref()
        .filter(|e| e.type_ == EncryptionType::SseKms)
        .and_then(|e| e.kms_key_arn.as_deref())
}

/// Whether credentials under this class may ask for external access.
pub fn check_external_access(allow_external_access: bool, class: &Class) -> Result<(), Refusal> {
    if allow_external_access && !class.spec.allow_external_access {
        return Err(Refusal::Forbids(format!(
            "spec.allowExternalAccess: the BucketClass {} of the Bucket does not allow credentials to work from \
             outside the platform network",
            class.name
        )));
    }
    Ok(())
}

/// The deletion policy in effect: the Bucket's, else its class's, else `Delete`; but never one the class
/// does not allow (a Bucket asking for it is refused, and deleting it follows the class), then the first the
/// class allows, `Delete` before `Retain`.
pub fn deletion_policy(spec: &BucketSpec, class: Option<&Class>) -> DeletionPolicy {
    let allowed = |policy: &DeletionPolicy| class.is_none_or(|c| c.spec.allows_deletion_policy(*policy));
    spec.deletion_policy
        .filter(allowed)
        .or_else(|| class.and_then(|c| c.spec.deletion_policy).filter(allowed))
        .or_else(|| [DeletionPolicy::Delete, DeletionPolicy::Retain].into_iter().find(allowed))
        .unwrap_or(DeletionPolicy::Retain)
}

/// Whether a label selector selects an object with `labels` (`matchLabels` and `matchExpressions`, ANDed;
/// an empty selector selects everything; an unknown operator selects nothing).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_match && expressions_match
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};

    fn class(name: &str, default: bool, created: i64, spec: BucketClassSpec) -> BucketClass {
        let mut class = BucketClass::new(name, spec);
        if default {
            class.metadata.annotations =
                Some([(DEFAULT_CLASS_ANNOTATION.to_owned(), "true".to_owned())].into_iter().collect());
        }
        class.metadata.creation_timestamp =
            Some(Time(k8s_openapi::jiff::Timestamp::from_second(created).expect("time")));
        class
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_bucket_gets_its_named_class_the_newest_default_or_the_built_in() {
        let spec = BucketSpec::default();
        assert_eq!(choose(&spec, &[], "eu-west-2"), Ok(Class::built_in()));
        let classes = [
            class("old-default", true, 100, BucketClassSpec::default()),
            class("new-default", true, 200, BucketClassSpec::default()),
            class(
                "standard",
                false,
                300,
                BucketClassSpec { region: Some("eu-west-1".into()), ..Default::default() },
            ),
        ];
        let chosen = choose(&spec, &classes, "eu-west-2").expect("a class");
        assert_eq!(chosen.name, "new-default");
        assert_eq!(chosen.spec.region.as_deref(), Some("eu-west-2"), "the controller's region by default");
        let named = BucketSpec { class_name: Some("standard".into()), ..Default::default() };
        let chosen = choose(&named, &classes, "eu-west-2").expect("a class");
        assert_eq!((chosen.name.as_str(), chosen.spec.region.as_deref()), ("standard", Some("eu-west-1")));
        let missing = BucketSpec { class_name: Some("gold".into()), ..Default::default() };
        assert!(matches!(choose(&missing, &classes, "r"), Err(Refusal::NotFound(m)) if m.contains("gold")));
        // Without a default, a Bucket that names no class gets the built-in one.
        assert_eq!(choose(&spec, &classes[2..], "r").map(|c| c.name), Ok(BUILT_IN.to_owned()));
    }

    #[test]
    fn a_class_is_offered_only_to_the_namespaces_it_selects() {
        let selector = LabelSelector {
            match_labels: Some([("tier".to_owned(), "prod".to_owned())].into_iter().collect()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: "NotIn".into(),
                values: Some(vec!["guests".into()]),
            }]),
        };
        let classes = [class(
            "prod",
            true,
            1,
            BucketClassSpec { namespace_selector: Some(selector), ..Default::default() },
        )];
        let class = choose(&BucketSpec::default(), &classes, "r").expect("the default class");
        assert!(check_namespace(&class, "shop", &labels(&[("tier", "prod")])).is_ok());
        let refused = check_namespace(&class, "guests", &labels(&[("tier", "prod"), ("team", "guests")]));
        assert!(matches!(refused, Err(Refusal::Forbids(m)) if m.contains("guests") && m.contains("prod")));
        assert!(check_namespace(&class, "dev", &labels(&[("tier", "dev")])).is_err());
        assert!(selects(&LabelSelector::default(), &labels(&[])), "an empty selector selects everything");
        let unknown = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Gt".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(!selects(&unknown, &labels(&[("a", "1")])));
    }

    #[test]
    fn features_follow_the_class_and_what_it_leaves_to_the_bucket() {
        use crate::api::{ClassEncryption, ClassLifecycle, CorsMethod, CorsRule as ApiCors};
        let kms = "arn:aws:kms:eu-west-2:123456789012:key/k";
        let class = |spec: BucketClassSpec| Class { name: "c".into(), spec };
        let versioned = class(BucketClassSpec {
            encryption: Some(ClassEncryption {
                type_: EncryptionType::SseKms,
                kms_key_arn: Some(kms.into()),
                bucket_key_enabled: true,
            }),
            versioning: Some(ClassVersioning::Enabled),
            lifecycle: Some(ClassLifecycle {
                noncurrent_version_expiration_days: Some(30),
                abort_incomplete_multipart_upload_days: 7,
                max_object_expiration_days: Some(90),
            }),
            ..Default::default()
        });
        let spec = BucketSpec { expire_objects_after_days: Some(60), ..Default::default() };
        let got = features(&spec, &versioned);
        assert_eq!(got.encryption, Encryption::SseKms { key_arn: kms.into(), bucket_key: true });
        assert_eq!(got.versioning, Some(Versioning::Enabled));
        assert_eq!(got.lifecycle.noncurrent_version_expiration_days, Some(30));
        assert_eq!(got.lifecycle.expire_objects_after_days, Some(60));
        assert_eq!(got.cors, Some(vec![]), "no CORS rule where the class does not allow CORS");
        assert_eq!(kms_key(&versioned), Some(kms));
        assert!(check_features(&spec, &versioned).is_ok());
        let too_long = BucketSpec { expire_objects_after_days: Some(120), ..Default::default() };
        assert!(
            matches!(check_features(&too_long, &versioned), Err(Refusal::Forbids(m)) if m.starts_with("spec.expireObjectsAfterDays"))
        );
        assert_eq!(
            features(&too_long, &versioned).lifecycle.expire_objects_after_days,
            None,
            "never past the ceiling"
        );
        let suspended = BucketSpec { versioning: Some(BucketVersioning::Suspended), ..Default::default() };
        assert!(check_features(&suspended, &versioned).is_err(), "the class decides");
        let pinned = BucketSpec { versioning: Some(BucketVersioning::Enabled), ..Default::default() };
        assert!(check_features(&pinned, &versioned).is_ok(), "pinning the value in effect is accepted");
        let choice =
            class(BucketClassSpec { versioning: Some(ClassVersioning::TenantChoice), ..Default::default() });
        assert_eq!(features(&suspended, &choice).versioning, Some(Versioning::Suspended));
        assert_eq!(features(&BucketSpec::default(), &choice).versioning, None, "never asked: untouched");
        // A class that keeps its buckets unversioned suspends one found versioned (S3 cannot turn it off),
        // whatever the Bucket asked under an earlier class; the built-in class never touches versioning.
        let unversioned =
            class(BucketClassSpec { versioning: Some(ClassVersioning::Disabled), ..Default::default() });
        for tightened in [&unversioned, &class(BucketClassSpec::default())] {
            assert_eq!(features(&pinned, tightened).versioning, Some(Versioning::Suspended));
            assert_eq!(versioning(&pinned, tightened), None, "status shows no versioning");
            assert!(
                matches!(check_features(&pinned, tightened), Err(Refusal::Forbids(m)) if m.starts_with("spec.versioning"))
            );
        }
        assert_eq!(features(&BucketSpec::default(), &Class::built_in()).versioning, None);
        assert_eq!(versioning(&pinned, &choice), Some(Versioning::Enabled));
        let cors = BucketSpec {
            cors: vec![ApiCors {
                allowed_origins: vec!["https://a".into()],
                allowed_methods: vec![CorsMethod::GET],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(
            matches!(check_features(&cors, &choice), Err(Refusal::Forbids(m)) if m.starts_with("spec.cors") && m.ends_with("the bucket has none"))
        );
        assert_eq!(features(&cors, &choice).cors, Some(vec![]), "refused, and none in AWS either");
        // The built-in class refuses spec.cors too, but leaves the rules apps set to them, as before classes.
        assert_eq!(features(&cors, &Class::built_in()).cors, None);
        assert!(
            matches!(check_features(&cors, &Class::built_in()), Err(Refusal::Forbids(m)) if m.ends_with("does not allow CORS rules"))
        );
        let web = class(BucketClassSpec { allow_cors: true, ..Default::default() });
        let rules = features(&cors, &web).cors.expect("managed");
        assert_eq!(rules[0].allowed_methods, ["GET"]);
        assert_eq!(features(&BucketSpec::default(), &web).cors, Some(vec![]), "no rule: none in AWS");
        // A class made by hand aborts forgotten uploads after 7 days; the built-in one adds no rule.
        assert_eq!(
            features(&BucketSpec::default(), &choice).lifecycle.abort_incomplete_multipart_upload_days,
            Some(7)
        );
        assert_eq!(features(&BucketSpec::default(), &Class::built_in()).lifecycle, Lifecycle::default());
    }

    #[test]
    fn what_a_class_forbids_is_refused_with_the_field_and_the_class() {
        let strict = Class {
            name: "strict".into(),
            spec: BucketClassSpec {
                region: Some("eu-west-2".into()),
                allowed_deletion_policies: Some(vec![DeletionPolicy::Retain]),
                deletion_policy: Some(DeletionPolicy::Retain),
                ..Default::default()
            },
        };
        let refused = |spec: BucketSpec| match check_bucket(&spec, &strict) {
            Err(Refusal::Forbids(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(
            refused(BucketSpec { public: true, ..Default::default() })
                .starts_with("spec.public: the BucketClass strict")
        );
        assert!(
            refused(BucketSpec { region: Some("us-east-1".into()), ..Default::default() })
                .starts_with("spec.region")
        );
        let delete = BucketSpec { deletion_policy: Some(DeletionPolicy::Delete), ..Default::default() };
        assert!(refused(delete).starts_with("spec.deletionPolicy"));
        assert_eq!(
            check_bucket(&BucketSpec { region: Some("eu-west-2".into()), ..Default::default() }, &strict),
            Ok(())
        );
        assert_eq!(
            deletion_policy(&BucketSpec::default(), Some(&strict)),
            DeletionPolicy::Retain,
            "the class's default"
        );
        assert_eq!(deletion_policy(&BucketSpec::default(), None), DeletionPolicy::Delete);
        let asked = BucketSpec { deletion_policy: Some(DeletionPolicy::Delete), ..Default::default() };
        assert_eq!(
            deletion_policy(&asked, Some(&strict)),
            DeletionPolicy::Retain,
            "never what the class forbids"
        );
        let no_default = Class {
            name: "keep".into(),
            spec: BucketClassSpec {
                allowed_deletion_policies: Some(vec![DeletionPolicy::Retain]),
                ..Default::default()
            },
        };
        assert_eq!(deletion_policy(&BucketSpec::default(), Some(&no_default)), DeletionPolicy::Retain);
        assert!(check_external_access(true, &strict).is_err());
        assert!(check_external_access(false, &strict).is_ok());
        let built_in = Class::built_in();
        assert!(
            check_bucket(
                &BucketSpec { public: true, region: Some("ap-south-1".into()), ..Default::default() },
                &built_in
            )
            .is_ok()
        );
        assert!(check_external_access(true, &built_in).is_ok(), "the built-in class keeps today's behaviour");
    }
}
