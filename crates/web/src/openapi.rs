//! What the OpenAPI document says every operation can answer, beyond what its handler declares:
//! problem bodies as `application/problem+json`, and the statuses the shared edge adds to every
//! route (token, limits, body reading, deadlines, overload). Clients and the schemathesis run
//! (`scripts/fuzz-api.sh`) hold the server to it.

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Schema};

const PROBLEM_JSON: &str = "application/problem+json";

/// Rewrites problem responses to `application/problem+json` and adds the edge's statuses.
pub fn document_problems(doc: &mut OpenApi) {
    for (path, item) in &mut doc.paths.paths {
        let api = path.starts_with("/v1/");
        for (method, op) in operations(item) {
            problems_as_problem_json(op);
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let has_body = op.request_body.is_some();
            let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty()) || path.contains('{');
            let mut add = |status: &str, why: &str| add_problem(op, status, why);
            if secured {
                add("401", "UNAUTHENTICATED or INVALID_TOKEN: no bearer token, or one that is not valid");
            }
            if has_body {
                add("400", "MALFORMED_JSON, or a body that could not be read");
                add("408", "REQUEST_TIMEOUT: the body did not arrive in time");
                add("413", "PAYLOAD_TOO_LARGE");
                add("415", "UNSUPPORTED_MEDIA_TYPE: the body is not application/json");
            }
            if path.contains('{') {
                add("404", "NOT_FOUND: no such resource, or not one the caller may see");
            }
            if has_body || has_params {
                add("422", "VALIDATION_FAILED, naming every bad field or parameter");
            }
            if secured && method == "post" {
                add("409", "IDEMPOTENCY_KEY_IN_USE: the first request under this Idempotency-Key is still running");
                add("422", "IDEMPOTENCY_KEY_REUSED, or an Idempotency-Key that is not 1 to 255 visible characters");
            }
            if api {
                add("429", "RATE_LIMITED: retry after Retry-After");
            }
            add(
                "503",
                "UNAVAILABLE: a dependency is down, too many connections, or no answer in time; retry after Retry-After",
            );
        }
    }
}

/// Links the `201` of `POST {from}` to every operation under `{to}` (a path with one `{id}`), with
/// `id` taken from the created resource: clients (and the fuzzer's stateful phase) follow them from
/// a created resource to what can be done with it.
pub fn link_created(doc: &mut OpenApi, from: &str, to: &str) {
    let mut targets: Vec<(String, String)> = Vec::new();
    for (path, item) in &mut doc.paths.paths {
        if !path.starts_with(to) {
            continue;
        }
        for (method, op) in operations(item) {
            if let Some(id) = op.operation_id.clone() {
                targets.push((format!("{method} {path}"), id));
            }
        }
    }
    let Some(created) = doc
        .paths
        .paths
        .get_mut(from)
        .and_then(|item| item.post.as_mut())
        .and_then(|op| op.responses.responses.get_mut("201"))
    else {
        return;
    };
    let RefOr::T(created) = created else { return };
    for (name, operation_id) in targets {
        let link = LinkBuilder::new().operation_id(operation_id).parameter("id", "$response.body#/id").build();
        created.links.insert(name, link.into());
    }
}

/// Says which assets this deployment accepts: every `currency` field and parameter becomes an enum
/// of the configured codes.
pub fn document_assets(doc: &mut OpenApi, codes: &[&str]) {
    let values: Vec<serde_json::Value> = codes.iter().map(|c| serde_json::Value::from(*c)).collect();
    let set = |schema: &mut RefOr<Schema>| {
        if let RefOr::T(Schema::Object(o)) = schema {
            o.enum_values = Some(values.clone());
        }
    };
    if let Some(components) = doc.components.as_mut() {
        for schema in components.schemas.values_mut() {
            let RefOr::T(Schema::Object(object)) = schema else { continue };
            if let Some(currency) = object.properties.get_mut("currency") {
                set(currency);
            }
        }
    }
    for item in doc.paths.paths.values_mut() {
        for (_, op) in operations(item) {
            for p in op.parameters.iter_mut().flatten() {
                if let RefOr::T(p) = p
                    && p.name == "currency"
                    && let Some(schema) = p.schema.as_mut()
                {
                    set(schema);
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("post", item.post.as_mut()),
        ("put", item.put.as_mut()),
        ("patch", item.patch.as_mut()),
        ("delete", item.delete.as_mut()),
        ("head", item.head.as_mut()),
        ("options", item.options.as_mut()),
        ("trace", item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
    .collect()
}

fn problems_as_problem_json(op: &mut Operation) {
    for response in op.responses.responses.values_mut() {
        let RefOr::T(response) = response else { continue };
        let is_problem = response.content.get("application/json").is_some_and(|c| {
            matches!(c, RefOr::T(c) if matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem")))
        });
        if is_problem && let Some(content) = response.content.shift_remove("application/json") {
            response.content.insert(PROBLEM_JSON.to_string(), content);
        }
    }
}

fn add_problem(op: &mut Operation, status: &str, description: &str) {
    op.responses.responses.entry(status.to_string()).or_insert_with(|| {
        ResponseBuilder::new()
            .description(description)
            .content(PROBLEM_JSON, ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build())
            .build()
            .into()
    });
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::path::{OperationBuilder, PathItemBuilder};
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::{HttpMethod, OpenApiBuilder, PathsBuilder};

    use super::*;

    #[test]
    fn problems_become_problem_json_and_the_edge_statuses_are_added() {
        let declared = ResponseBuilder::new()
            .description("not found")
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build())
            .build();
        let op = OperationBuilder::new()
            .response("404", declared)
            .request_body(Some(RequestBodyBuilder::new().build()))
            .build();
        let paths = PathsBuilder::new()
            .path("/v1/things/{id}", PathItemBuilder::new().operation(HttpMethod::Patch, op).build());
        let mut doc = OpenApiBuilder::new().paths(paths).build();
        document_problems(&mut doc);
        let op = doc.paths.paths["/v1/things/{id}"].patch.as_ref().unwrap();
        let statuses: Vec<&str> = op.responses.responses.keys().map(String::as_str).collect();
        assert_eq!(statuses, ["400", "404", "408", "413", "415", "422", "429", "503"]);
        let RefOr::T(not_found) = &op.responses.responses["404"] else { panic!("a reference") };
        assert_eq!(not_found.content.keys().collect::<Vec<_>>(), [PROBLEM_JSON]);
    }
}
