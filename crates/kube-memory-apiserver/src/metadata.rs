//! Metadata-only responses: what a client asking with
//! `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1` gets (kube's
//! `Api<PartialObjectMeta<K>>`, client-go's metadata informers): each object as `meta.k8s.io/v1`
//! `PartialObjectMetadata`, its metadata and nothing else, so that a controller caching Secrets never
//! receives their data.

use serde_json::{Value, json};

/// Whether the `Accept` header asks for `as` (`PartialObjectMetadata` or `PartialObjectMetadataList`).
pub(super) fn wanted(accept: &str, as_kind: &str) -> bool {
    let wanted_as = format!("as={as_kind}");
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.first() == Some(&"application/json")
            && params.contains(&wanted_as.as_str())
            && params.contains(&"v=v1")
            && params.contains(&"g=meta.k8s.io")
    })
}

/// `object` as `PartialObjectMetadata`.
pub(super) fn partial(object: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A list as `PartialObjectMetadataList`.
pub(super) fn partial_list(list: &Value) -> Value {
    let items: Vec<Value> =
        list["items"].as_array().map(|i| i.iter().map(partial).collect()).unwrap_or_default();
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadataList",
        "metadata": list.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_metadata_is_left() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "resourceVersion": "3"},
            "data": {"k": "dg=="}, "type": "Opaque"});
        assert_eq!(
            partial(&secret),
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": {"name": "s", "resourceVersion": "3"}})
        );
        let list = json!({"kind": "SecretList", "metadata": {"resourceVersion": "4"}, "items": [secret]});
        let partial = partial_list(&list);
        assert_eq!(partial["kind"], "PartialObjectMetadataList");
        assert_eq!(partial["metadata"]["resourceVersion"], "4");
        assert!(partial["items"][0].get("data").is_none());
    }

    #[test]
    fn asked_for_with_kube_and_client_go_accept_headers() {
        assert!(wanted(
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            "PartialObjectMetadataList"
        ));
        assert!(wanted(
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json",
            "PartialObjectMetadata"
        ));
        assert!(!wanted("application/json", "PartialObjectMetadata"));
        assert!(!wanted("application/json;as=Table;g=meta.k8s.io;v=v1", "PartialObjectMetadata"));
    }
}
