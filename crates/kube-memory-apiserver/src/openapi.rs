//! OpenAPI v3 documents, what `kubectl explain` reads and what `kubectl apply` checks before it
//! sends `fieldValidation=Strict` (a PATCH operation per kind that lists that parameter).
//!
//! `/openapi/v3` is the index (one entry per group-version, with a content hash in the URL as the
//! real server gives), `/openapi/v3/apis/{group}/{version}` and `/openapi/v3/api/v1` the documents.
//! A custom resource's schema is its CRD's `openAPIV3Schema` with `apiVersion`, `kind` and
//! `metadata` added; a built-in kind has no modelled schema and is described as an open object.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde_json::{Value, json};

use super::types::{Registry, ResourceType};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// `"apis/group/version"`, or `"api/v1"` for the core group: the key of the index.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

fn group_versions(registry: &Registry) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for t in registry.all() {
        let gv = (t.group.clone(), t.version.clone());
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

/// `GET /openapi/v3`.
pub(super) fn index(registry: &Registry) -> Value {
    let paths: BTreeMap<String, Value> = group_versions(registry)
        .into_iter()
        .filter_map(|(g, v)| {
            let doc = document(registry, &g, &v)?;
            let mut h = std::hash::DefaultHasher::new();
            doc.to_string().hash(&mut h);
            let path = gv_path(&g, &v);
            let url = format!("/openapi/v3/{path}?hash={:016X}", h.finish());
            Some((path, json!({ "serverRelativeURL": url })))
        })
        .collect();
    json!({ "paths": paths })
}

/// `GET /openapi/v3/{api/v1 | apis/group/version}`; `None` when the group-version is not served.
pub(super) fn document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let types: Vec<&ResourceType> =
        registry.all().filter(|t| t.group == group && t.version == version).map(|t| t.as_ref()).collect();
    if types.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    schemas.insert(OBJECT_META.into(), object_meta());
    for t in types {
        let name = schema_name(t);
        let gvk = json!({ "group": t.group, "version": t.version, "kind": t.kind });
        let mut schema = t.schema.clone().unwrap_or_else(|| {
            json!({
                "type": "object",
                "description": format!("{}: no schema is modelled by the in-memory API server.", t.kind),
                "x-kubernetes-preserve-unknown-fields": true,
            })
        });
        add_envelope(&mut schema);
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        schemas.insert(name.clone(), schema);
        let base = format!("/{}", gv_path(&t.group, &t.version));
        let collection = if t.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("{base}/{}", t.plural)
        };
        let reference = json!({ "$ref": format!("#/components/schemas/{name}") });
        let op = |action: &str, verb: &str| {
            json!({
                "operationId": format!("{verb}{}", t.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": write_parameters(),
                "responses": { "200": { "content": { "application/json": { "schema": reference } } } },
            })
        };
        let mut item = json!({
            "get": op("get", "read"),
            "put": op("put", "replace"),
            "patch": op("patch", "patch"),
            "delete": op("delete", "delete"),
        });
        item["patch"]["requestBody"] =
            json!({ "content": { "application/merge-patch+json": { "schema": { "type": "object" } } } });
        paths.insert(format!("{collection}/{{name}}"), item);
        paths.insert(collection, json!({ "post": op("post", "create") }));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "v1.28.0" },
        "paths": paths,
        "components": { "schemas": schemas },
    }))
}

/// `io.bucketbroker.v1alpha1.Bucket` for group `bucketbroker.io`: the real server's naming.
fn schema_name(t: &ResourceType) -> String {
    let group = if t.group.is_empty() {
        "io.k8s.api.core".to_string()
    } else {
        t.group.split('.').rev().collect::<Vec<_>>().join(".")
    };
    format!("{group}.{}.{}", t.version, t.kind)
}

/// The fields every kind has and no CRD schema describes.
fn add_envelope(schema: &mut Value) {
    if !schema.get("properties").is_some_and(Value::is_object) {
        schema["properties"] = json!({});
    }
    let props = &mut schema["properties"];
    props["apiVersion"] = json!({
        "type": "string",
        "description": "APIVersion defines the versioned schema of this representation of an object.",
    });
    props["kind"] = json!({
        "type": "string",
        "description": "Kind is a string value representing the REST resource this object represents.",
    });
    props["metadata"] = json!({
        "allOf": [{ "$ref": format!("#/components/schemas/{OBJECT_META}") }],
        "default": {},
        "description": "Standard object's metadata.",
    });
}

fn write_parameters() -> Value {
    let query = |name: &str, description: &str| json!({ "name": name, "in": "query", "description": description, "schema": { "type": "string", "uniqueItems": true } });
    json!([
        query("dryRun", "When present, indicates that modifications should not be persisted."),
        query(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes."
        ),
        query(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields."
        ),
        query("force", "Force is going to \"force\" Apply requests."),
    ])
}

fn object_meta() -> Value {
    let string = |d: &str| json!({ "type": "string", "description": d });
    let map =
        |d: &str| json!({ "type": "object", "additionalProperties": { "type": "string" }, "description": d });
    json!({
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "properties": {
            "name": string("Name must be unique within a namespace."),
            "generateName": string("GenerateName is an optional prefix, used by the server, to generate a unique name."),
            "namespace": string("Namespace defines the space within which each name must be unique."),
            "uid": string("UID is the unique in time and space value for this object."),
            "resourceVersion": string("An opaque value that represents the internal version of this object."),
            "generation": { "type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state." },
            "creationTimestamp": string("CreationTimestamp is a timestamp representing the server time when this object was created."),
            "deletionTimestamp": string("DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted."),
            "labels": map("Map of string keys and values that can be used to organize and categorize objects."),
            "annotations": map("Annotations is an unstructured key value map stored with a resource."),
            "finalizers": { "type": "array", "items": { "type": "string" }, "x-kubernetes-list-type": "set", "description": "Must be empty before the object is deleted from the registry." },
            "ownerReferences": { "type": "array", "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }, "description": "List of objects depended by this object." },
        },
    })
}
