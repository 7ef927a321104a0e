//! Schema and CEL rule tests: what the API server will accept, default and reject.

use kube::CustomResourceExt;
use kube::core::cel::{validate_cel, validate_cel_update};
use serde_json::{Value, json};

use super::*;

fn schema_of(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let version = &crd.spec.versions[0];
    serde_json::to_value(version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()))
        .expect("schema serializes")
}

fn binding(spec: Value) -> BucketBinding {
    serde_json::from_value(json!({
        "apiVersion": "bucketbroker.io/v1alpha1",
        "kind": "BucketBinding",
        "metadata": {"name": "app", "namespace": "team"},
        "spec": spec,
    }))
    .expect("valid binding")
}

fn bucket(spec: Value) -> Bucket {
    serde_json::from_value(json!({
        "apiVersion": "bucketbroker.io/v1alpha1",
        "kind": "Bucket",
        "metadata": {"name": "assets", "namespace": "team"},
        "spec": spec,
    }))
    .expect("valid bucket")
}

#[test]
fn names_scope_and_categories() {
    let cases = [
        (Bucket::crd(), "buckets", "Bucket", "bkt"),
        (BucketBinding::crd(), "bucketbindings", "BucketBinding", "bkb"),
        (BucketServiceKey::crd(), "bucketservicekeys", "BucketServiceKey", "bsk"),
    ];
    for (crd, plural, kind, short) in cases {
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.names.short_names.as_deref(), Some(&[short.to_owned()][..]));
        assert_eq!(crd.spec.names.categories.as_deref(), Some(&[CATEGORY.to_owned()][..]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, VERSION);
        assert!(version.served && version.storage);
        assert!(
            version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "{kind}: status subresource"
        );
        let description = schema_of(&crd)["description"].as_str().unwrap_or_default().to_owned();
        assert!(!description.is_empty() && !description.contains("Auto-generated"), "{kind}: {description}");
    }
}

#[test]
fn printer_columns_follow_the_design() {
    // (NAME, jsonPath), for `kubectl get` (priority 0) and for `-o wide` only (priority 1).
    let columns = |crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
                   wide: bool| {
        crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|c| (c.priority.unwrap_or(0) > 0) == wide)
            .map(|c| (c.name.to_uppercase(), c.json_path.clone()))
            .collect::<Vec<_>>()
    };
    let column = |name: &str, path: &str| (name.to_owned(), path.to_owned());
    let ready = ".status.conditions[?(@.type==\"Ready\")].status";
    let reason = ".status.conditions[?(@.type==\"Ready\")].reason";
    assert_eq!(
        columns(&Bucket::crd(), false),
        [
            column("BUCKET", ".status.bucketName"),
            column("CLASS", ".status.class"),
            column("PUBLIC", ".spec.public"),
            column("BINDINGS", ".status.bindings"),
            column("READY", ready),
            column("AGE", ".metadata.creationTimestamp"),
        ]
    );
    assert_eq!(
        columns(&Bucket::crd(), true),
        [
            column("REASON", reason),
            column("REGION", ".status.region"),
            column("DELETION", ".spec.deletionPolicy"),
            column("VERSIONING", ".status.versioning"),
        ]
    );
    let narrow = |app: bool| {
        let mut expected = vec![
            column("BUCKET", ".spec.bucketRef.name"),
            column("PERMISSIONS", ".spec.permissions"),
            column("SECRET", ".status.binding.name"),
        ];
        if app {
            expected.push(column("APP", ".spec.app"));
        }
        expected.push(column("READY", ready));
        expected.push(column("AGE", ".metadata.creationTimestamp"));
        expected
    };
    assert_eq!(columns(&BucketBinding::crd(), false), narrow(true), "bindings show their app");
    assert_eq!(columns(&BucketServiceKey::crd(), false), narrow(false));
    for (crd, keyless) in [(BucketBinding::crd(), true), (BucketServiceKey::crd(), false)] {
        let mut wide = vec![
            column("REASON", reason),
            column("EXTERNAL", ".spec.allowExternalAccess"),
            column("USER", ".status.userName"),
        ];
        if keyless {
            wide.push(column("SERVICEACCOUNT", ".spec.serviceAccountName"));
        }
        assert_eq!(columns(&crd, true), wide);
    }
}

#[test]
fn spec_defaults_enums_and_required_fields() {
    let bucket = schema_of(&Bucket::crd());
    let spec = &bucket["properties"]["spec"];
    assert_eq!(spec["properties"]["public"]["default"], json!(false));
    assert_eq!(spec["properties"]["deletionPolicy"].get("default"), None, "the class's default applies");
    assert_eq!(spec["properties"]["deletionPolicy"]["enum"], json!(["Delete", "Retain"]));
    assert_eq!(spec["properties"]["className"]["maxLength"], json!(253));

    let class = schema_of(&BucketClass::crd());
    let spec = &class["properties"]["spec"];
    assert_eq!(
        spec["properties"]["allowPublic"]["default"],
        json!(false),
        "a class made by hand allows little"
    );
    assert_eq!(spec["properties"]["allowExternalAccess"]["default"], json!(false));
    assert!(spec["required"].as_array().is_none_or(|r| r.is_empty()), "a class needs no field");
    assert_eq!(BucketClass::crd().spec.scope, "Cluster");
    assert_eq!(BucketClass::crd().spec.names.short_names, Some(vec!["bkc".to_owned()]));
    assert!(spec["required"].as_array().is_none_or(|r| r.is_empty()), "a Bucket needs no spec field");

    for crd in [BucketBinding::crd(), BucketServiceKey::crd()] {
        let schema = schema_of(&crd);
        let spec = &schema["properties"]["spec"];
        assert_eq!(spec["required"], json!(["bucketRef"]));
        assert_eq!(spec["properties"]["bucketRef"]["required"], json!(["name"]));
        assert_eq!(spec["properties"]["permissions"]["default"], json!("ReadWrite"));
        assert_eq!(spec["properties"]["permissions"]["enum"], json!(["ReadWrite", "ReadOnly"]));
        assert_eq!(spec["properties"]["allowExternalAccess"]["default"], json!(false));
        assert_eq!(spec["properties"]["secretName"]["type"], json!("string"));
    }
}

#[test]
fn every_field_is_documented() {
    fn walk(path: &str, node: &Value, undocumented: &mut Vec<String>) {
        if let Some(props) = node["properties"].as_object() {
            for (name, child) in props {
                let child_path = format!("{path}.{name}");
                // metadata is documented by Kubernetes itself.
                if child_path != ".metadata" && child["description"].as_str().is_none_or(str::is_empty) {
                    undocumented.push(child_path.clone());
                }
                walk(&child_path, child, undocumented);
            }
        }
        if node["items"].is_object() {
            walk(&format!("{path}[]"), &node["items"], undocumented);
        }
    }
    for crd in crds() {
        let mut undocumented = Vec::new();
        let schema = schema_of(&crd);
        walk("", &schema["properties"]["spec"], &mut undocumented);
        walk("", &schema["properties"]["status"], &mut undocumented);
        assert!(undocumented.is_empty(), "{}: undocumented {undocumented:?}", crd.spec.names.kind);
    }
}

#[test]
fn descriptions_are_unwrapped_into_paragraphs_and_list_items() {
    let comment = "Rotate keys older than this, e.g.\n`90d`; at most the platform's maximum.\n\nOne of:\n- `Delete`: the\n  bucket goes;\n- `Retain`: it stays.\n1. first\n2. second";
    assert_eq!(
        unwrapped(comment),
        "Rotate keys older than this, e.g. `90d`; at most the platform's maximum.\n\nOne of:\n- `Delete`: the bucket goes;\n- `Retain`: it stays.\n1. first\n2. second"
    );
}

#[test]
fn kubectl_explain_prints_whole_sentences() {
    // Every line break left in a description is a paragraph break or starts a list item.
    fn walk(path: &str, node: &Value, broken: &mut Vec<String>) {
        if let Some(description) = node["description"].as_str() {
            let lines: Vec<&str> = description.split('\n').collect();
            for pair in lines.windows(2) {
                let next = pair[1];
                let fine =
                    pair[0].is_empty() || next.is_empty() || next.starts_with("- ") || next.starts_with("* ");
                if !fine && !next.split_once(". ").is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
                {
                    broken.push(format!("{path}: {:?}", pair[1]));
                }
            }
        }
        for (name, child) in node["properties"].as_object().into_iter().flatten() {
            walk(&format!("{path}.{name}"), child, broken);
        }
        if node["items"].is_object() {
            walk(&format!("{path}[]"), &node["items"], broken);
        }
    }
    for crd in crds() {
        let mut broken = Vec::new();
        walk("", &schema_of(&crd), &mut broken);
        assert!(broken.is_empty(), "{}: hard line breaks in {broken:#?}", crd.spec.names.kind);
    }
}

#[test]
fn schemas_are_structural_and_fit_the_oldest_kubernetes_we_support() {
    // A structural schema gives every node a type (or says it is int-or-string / preserves unknown fields),
    // and uses no $ref. The oldest release we support is the test control plane's, v1.33 (README): a rule
    // may have a fieldPath; selectableFields would need every supported release to have it, and
    // optionalOldSelf is not used.
    fn walk(path: &str, node: &Value, problems: &mut Vec<String>) {
        let Some(obj) = node.as_object() else { return };
        let typed = obj.contains_key("type")
            || obj.get("x-kubernetes-int-or-string") == Some(&json!(true))
            || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
        if !typed {
            problems.push(format!("{path}: no type"));
        }
        for key in
            ["$ref", "definitions", "$defs", "oneOf", "anyOf", "allOf", "additionalItems", "uniqueItems"]
        {
            if obj.contains_key(key) {
                problems.push(format!("{path}: {key}"));
            }
        }
        for rule in obj.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
            for key in rule.as_object().into_iter().flat_map(|r| r.keys()) {
                if !["rule", "message", "fieldPath"].contains(&key.as_str()) {
                    problems.push(format!("{path}: validation rule field {key} is not used by these CRDs"));
                }
            }
        }
        for (name, child) in obj.get("properties").and_then(Value::as_object).into_iter().flatten() {
            walk(&format!("{path}.{name}"), child, problems);
        }
        if let Some(items) = obj.get("items") {
            walk(&format!("{path}[]"), items, problems);
        }
        if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
            walk(&format!("{path}{{}}"), extra, problems);
        }
    }
    for crd in crds() {
        let mut problems = Vec::new();
        walk("", &schema_of(&crd), &mut problems);
        assert!(problems.is_empty(), "{}: {problems:?}", crd.spec.names.kind);
        assert!(crd.spec.versions[0].selectable_fields.is_none());
    }
}

#[test]
fn conditions_are_a_list_map_keyed_by_type() {
    // A BucketClass has no status: nothing reconciles it.
    for crd in crds().into_iter().filter(|c| c.spec.names.kind != "BucketClass") {
        let conditions = &schema_of(&crd)["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], json!("map"), "{}", crd.spec.names.kind);
        assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
        let required = conditions["items"]["required"].as_array().cloned().unwrap_or_default();
        assert!(required.contains(&json!("type")), "list-map keys must be required");
    }
}

#[test]
fn binding_bucket_ref_is_immutable() {
    let old = binding(json!({"bucketRef": {"name": "assets"}}));
    let moved = binding(json!({"bucketRef": {"name": "other"}}));
    let errors = validate_cel_update(&moved, &old).expect_err("changing bucketRef is rejected");
    let refusal = format!("{errors:?}");
    assert!(refusal.contains("spec.bucketRef"), "names the field: {refusal}");
    assert!(refusal.contains("delete and re-create the object to change it"), "{refusal}");
}

#[test]
fn binding_permissions_and_external_access_may_change() {
    let old = binding(json!({"bucketRef": {"name": "assets"}, "permissions": "ReadWrite"}));
    let new = binding(
        json!({"bucketRef": {"name": "assets"}, "permissions": "ReadOnly", "allowExternalAccess": true}),
    );
    validate_cel_update(&new, &old).expect("permissions and allowExternalAccess are mutable");
    validate_cel(&new).expect("a new binding passes every rule");
}

/// The field path and the message of every CEL refusal, as one string to search.
fn refusals(errors: &[kube::core::cel::ValidationError]) -> String {
    errors.iter().map(|e| format!("{}: {}", e.field_path, e.message)).collect::<Vec<_>>().join("\n")
}

#[test]
fn binding_secret_name_is_immutable_but_may_pin_the_name_in_effect() {
    // The binding is called `app`: its Secret is `app` unless secretName says otherwise.
    let unset = binding(json!({"bucketRef": {"name": "assets"}}));
    let set = binding(json!({"bucketRef": {"name": "assets"}, "secretName": "creds"}));
    let other = binding(json!({"bucketRef": {"name": "assets"}, "secretName": "other"}));
    let pinned = binding(json!({"bucketRef": {"name": "assets"}, "secretName": "app"}));
    for (new, old) in [(&set, &unset), (&unset, &set), (&other, &set)] {
        let errors = validate_cel_update(new, old).expect_err("secretName change is rejected");
        let refusal = refusals(&errors);
        assert!(refusal.contains("spec.secretName: spec.secretName is immutable"), "{refusal}");
        assert!(refusal.contains("delete and re-create the object to change it"), "{refusal}");
    }
    validate_cel_update(&set, &set).expect("an unchanged secretName passes");
    validate_cel_update(&pinned, &unset).expect("the default pinned (a GitOps tool's value) passes");
    validate_cel_update(&unset, &pinned).expect("a pin of the default removed passes");
}

#[test]
fn bucket_region_is_immutable_but_may_pin_the_region_in_effect() {
    let with_status = |spec: Value, region: Option<&str>| {
        let mut b = bucket(spec);
        b.status = region.map(|r| BucketStatus { region: Some(r.to_owned()), ..Default::default() });
        b
    };
    let old = with_status(json!({"region": "eu-west-2"}), Some("eu-west-2"));
    let moved = with_status(json!({"region": "eu-west-1"}), Some("eu-west-2"));
    let unset = with_status(json!({}), Some("eu-west-2"));
    let new = with_status(json!({}), None);
    let pinned_early = with_status(json!({"region": "eu-west-2"}), None);
    let other = with_status(json!({"region": "eu-west-1"}), Some("eu-west-2"));
    for (new, previous) in [(&moved, &old), (&other, &unset), (&pinned_early, &new)] {
        let errors = validate_cel_update(new, previous).expect_err("region change is rejected");
        let refusal = refusals(&errors);
        assert!(refusal.contains("spec.region: spec.region is immutable"), "{refusal}");
        assert!(refusal.contains("delete and re-create the object to change it"), "{refusal}");
    }
    validate_cel_update(&old, &unset).expect("the region in effect pinned passes");
    validate_cel_update(&unset, &old).expect("a pin of the region in effect removed passes");
    validate_cel_update(&unset, &new).expect("the controller's first status write passes");
    let public = bucket(json!({"region": "eu-west-2", "public": true, "deletionPolicy": "Retain"}));
    validate_cel_update(&public, &old).expect("public and deletionPolicy are mutable");
}

#[test]
fn region_names_follow_every_aws_partition() {
    let pattern = matcher(REGION_PATTERN);
    for region in [
        "eu-west-2",
        "us-east-1",
        "ap-southeast-7",
        "mx-central-1",
        "il-central-1",
        "cn-northwest-1",
        "us-gov-west-1",
        "us-iso-east-1",
        "us-isob-east-1",
        "eu-isoe-west-1",
        "us-isof-south-1",
        "eusc-de-east-1",
    ] {
        assert!(pattern(region), "{region} is a region");
    }
    for region in crate::desired::names::KNOWN_REGIONS {
        assert!(pattern(region), "{region}, a region AWS has, passes the schema");
    }
    for name in ["EU_WEST_2", "eu-west", "euwest2", "eu-west-2a", "europe-west2", "eu-west-2 ", ""] {
        assert!(!pattern(name), "{name:?} is not a region");
    }
    let schema = schema_of(&Bucket::crd());
    assert_eq!(schema["properties"]["spec"]["properties"]["region"]["pattern"], json!(REGION_PATTERN));
    let schema = schema_of(&BucketClass::crd());
    assert_eq!(schema["properties"]["spec"]["properties"]["region"]["pattern"], json!(REGION_PATTERN));
}

/// Whether `text` matches `pattern`, with the regex engine the CEL support brings along.
fn matcher(pattern: &str) -> impl Fn(&str) -> bool {
    let compiled = regex::Regex::new(pattern).expect("pattern compiles");
    move |text| compiled.is_match(text)
}

#[test]
fn class_name_is_set_once() {
    let unset = bucket(json!({}));
    let standard = bucket(json!({"className": "standard"}));
    let gold = bucket(json!({"className": "gold"}));
    validate_cel_update(&standard, &unset).expect("a class may be set on a Bucket that has none yet");
    validate_cel_update(&standard, &standard).expect("pinned to the value in effect");
    for (new, previous) in [(&gold, &standard), (&unset, &standard)] {
        let errors = validate_cel_update(new, previous).expect_err("a class change is rejected");
        assert!(format!("{errors:?}").contains("className is immutable once set"), "{errors:?}");
    }
}

#[test]
fn service_key_shares_the_binding_spec() {
    let key: BucketServiceKey = serde_json::from_value(json!({
        "apiVersion": "bucketbroker.io/v1alpha1",
        "kind": "BucketServiceKey",
        "metadata": {"name": "laptop"},
        "spec": {"bucketRef": {"name": "assets"}, "allowExternalAccess": true},
    }))
    .expect("valid service key");
    assert_eq!(key.spec.bucket_ref.name, "assets");
    assert_eq!(key.spec.permissions, Permissions::ReadWrite);
    assert!(key.spec.allow_external_access);
    let spec_without_description = |crd| {
        let mut spec = schema_of(&crd)["properties"]["spec"].clone();
        spec.as_object_mut().and_then(|s| s.remove("description"));
        spec
    };
    // The same spec, except `app` and `serviceAccountName` (with its two rules), which only an app in the
    // cluster has.
    let mut binding = spec_without_description(BucketBinding::crd());
    let properties = binding["properties"].as_object_mut().expect("properties");
    properties.remove("app").expect("bindings have an app");
    properties.remove("serviceAccountName").expect("bindings may name a ServiceAccount");
    let rules = binding["x-kubernetes-validations"].as_array_mut().expect("rules");
    rules.retain(|r| !r["rule"].as_str().is_some_and(|r| r.contains("serviceAccountName")));
    assert!(rules.is_empty(), "the shared rules are on the shared fields, or on the root: {rules:?}");
    binding.as_object_mut().and_then(|b| b.remove("x-kubernetes-validations"));
    assert_eq!(spec_without_description(BucketServiceKey::crd()), binding);
    let root_rules = |crd| schema_of(&crd)["x-kubernetes-validations"].clone();
    assert_eq!(root_rules(BucketServiceKey::crd()), root_rules(BucketBinding::crd()), "secretName's rule");
}
