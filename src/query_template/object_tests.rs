use serde_json::{Map, Value, json};

use super::*;

/// examples/60-query-resource.yaml's template.
const USER_CONFIG: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: user-{{ row.username | lower }}-config
  labels:
    user_id: "{{ row.user_id }}"
data:
  email: "{{ row.email }}"
  status: "{{ row.status }}"
"#;

fn row(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

fn cr_metadata() -> Value {
    json!({"name": "user-configmaps", "namespace": "team-a", "uid": "u-1"})
}

fn render(template: &str, values: Value) -> Result<Value, String> {
    ObjectTemplate::compile(template)?.render(&row(values), &cr_metadata())
}

fn compile_error(template: &str) -> String {
    ObjectTemplate::compile(template).unwrap_err()
}

#[test]
fn the_example_renders_one_config_map_per_row() {
    let template = ObjectTemplate::compile(USER_CONFIG).unwrap();
    assert_eq!(template.static_api_version(), Some("v1"));
    assert_eq!(template.static_kind(), Some("ConfigMap"));
    assert_eq!(template.static_namespace(), None);
    let object = template
        .render(
            &row(json!({"username": "Alice", "user_id": 7, "email": "a@example.com", "status": "active"})),
            &cr_metadata(),
        )
        .unwrap();
    assert_eq!(
        object,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "user-alice-config", "labels": {"user_id": "7"}},
            "data": {"email": "a@example.com", "status": "active"},
        })
    );
}

/// The structure of a rendered object: everything but the strings' contents.
fn shape(value: &Value) -> Value {
    match value {
        Value::String(_) => json!("<string>"),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                // The one templated key, `key-{{ row.v }}`, holds the value by design.
                .map(|(k, v)| {
                    (
                        if k.starts_with("key-") {
                            "key-*".into()
                        } else {
                            k.clone()
                        },
                        shape(v),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn hostile_values_stay_text_in_their_field() {
    let template = ObjectTemplate::compile(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ row.v }}\n  namespace: team-a\n  labels:\n    plain: {{ row.v }}\n    quoted: '{{ row.v }}'\n    mixed: x-{{ row.v }}-y\ndata:\n  block: |\n    before\n    {{ row.v }}\n  key-{{ row.v }}: \"{{ row.v }}\"\n",
    )
    .unwrap();
    let expected_shape = shape(
        &template
            .render(&row(json!({"v": "harmless"})), &cr_metadata())
            .unwrap(),
    );
    for hostile in [
        "'; DROP TABLE t;--",
        "\"quoted\" and 'single'",
        r"back\slash \n \\",
        "x\nkind: ClusterRole\nnamespace: kube-system",
        "x\n---\napiVersion: v1\nkind: Secret",
        "{{ 7*7 }}",
        "}} {% if true %} {# #}",
        "{a: b}",
        "[1, 2]",
        "- item",
        "jinjaTag0Q0x",
        "null",
        "5",
        "",
    ] {
        let object = template
            .render(&row(json!({"v": hostile})), &cr_metadata())
            .unwrap();
        assert_eq!(shape(&object), expected_shape, "{hostile:?}");
        assert_eq!(object["kind"], "ConfigMap", "{hostile:?}");
        assert_eq!(object["metadata"]["namespace"], "team-a", "{hostile:?}");
        assert_eq!(object["metadata"]["name"], hostile, "{hostile:?}");
        let labels = &object["metadata"]["labels"];
        assert_eq!(labels["plain"], hostile);
        assert_eq!(labels["quoted"], hostile);
        assert_eq!(labels["mixed"], format!("x-{hostile}-y"));
        assert_eq!(object["data"]["block"], format!("before\n{hostile}\n"));
        assert_eq!(object["data"][format!("key-{hostile}")], hostile);
    }
}

#[test]
fn a_plain_single_expression_keeps_its_type() {
    let template = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: {{ row.n }}  # typed\n  paused: {{ row.b }}\n  gone: {{ row.none }}\n  text: {{ row.s }}\n  config: {{ row.map }}\n  quoted: \"{{ row.n }}\"\n  joined: {{ row.n }}{{ row.n }}\n  list:\n    - {{ row.n }}\n";
    let object = render(
        template,
        json!({"n": 3, "b": true, "none": null, "s": "5", "map": {"k": [1, "v"]}}),
    )
    .unwrap();
    assert_eq!(
        object["spec"],
        json!({
            "replicas": 3,
            "paused": true,
            "gone": null,
            "text": "5",
            "config": "{\"k\":[1,\"v\"]}",
            "quoted": "3",
            "joined": "33",
            "list": [3],
        })
    );
}

#[test]
fn missing_columns_are_the_rows_error_with_the_field() {
    let template = ObjectTemplate::compile(USER_CONFIG).unwrap();
    let error = template
        .render(
            &row(json!({"username": "a", "user_id": 1, "email": "e"})),
            &cr_metadata(),
        )
        .unwrap_err();
    assert!(error.starts_with("data.status: undefined value"), "{error}");
    let typed = ObjectTemplate::compile("kind: ConfigMap\nspec:\n  n: {{ row.n }}\n").unwrap();
    let error = typed.render(&Map::new(), &cr_metadata()).unwrap_err();
    assert!(error.starts_with("spec.n: "), "{error}");
    let nested = compile_error("kind: X\nspec:\n  containers:\n    - image: \"{{ row.x \"\n");
    assert!(nested.contains("does not close"), "{nested}");
    let error = render(
        "kind: X\nspec:\n  containers:\n    - image: \"{{ row.x.y }}\"\n",
        json!({}),
    )
    .unwrap_err();
    assert!(error.starts_with("spec.containers[0].image: "), "{error}");
}

#[test]
fn the_crs_metadata_is_in_context() {
    let object = render(
        "kind: ConfigMap\nmetadata:\n  name: \"{{ metadata.name }}-{{ row.id }}\"\n",
        json!({"id": 1}),
    )
    .unwrap();
    assert_eq!(object["metadata"]["name"], "user-configmaps-1");
}

#[test]
fn only_one_mapping_is_a_template() {
    let two = compile_error("kind: ConfigMap\n---\nkind: Secret\n");
    assert!(
        two.starts_with("must be one YAML document, found 2"),
        "{two}"
    );
    // Empty documents around `---` do not count, as with kubectl.
    assert!(ObjectTemplate::compile("---\nkind: ConfigMap\n---\n").is_ok());
    let list = compile_error("- kind: ConfigMap\n- kind: Secret\n");
    assert_eq!(
        list,
        "must be a YAML mapping (one Kubernetes object), found a list"
    );
    let text = compile_error("{{ row.object }}");
    assert!(text.contains("found a string"), "{text}");
    assert!(compile_error("").starts_with("is empty"));
    assert!(compile_error("# only a comment\n").starts_with("is empty"));
    let tagged = compile_error("kind: ConfigMap\ndata: !custom x\n");
    assert!(
        tagged.starts_with("data: YAML tags (!custom) are not supported"),
        "{tagged}"
    );
}

#[test]
fn statements_stay_inside_one_value() {
    let across = compile_error(
        "kind: ConfigMap\ndata:\n{% for k in row.keys %}\n  {{ k }}: x\n{% endfor %}\n",
    );
    assert!(
        across.contains("`{% for k in row.keys %}` at line 3, column 1 must open and close within one YAML value: the template is parsed as YAML before rendering, so that a row cannot change its structure"),
        "{across}"
    );
    assert!(across.contains("{{ a if c else b }}"), "{across}");
    let if_across = compile_error(
        "kind: ConfigMap\nmetadata:\n  name: a-{% if row.x %}x\n  labels: {}\n  other: {% endif %}\n",
    );
    assert!(if_across.starts_with("metadata.name: "), "{if_across}");
    assert!(
        if_across.contains("must open and close within one YAML value"),
        "{if_across}"
    );
    // Inside one value, statements are fine; so is a block scalar's.
    let object = render(
        "kind: ConfigMap\nmetadata:\n  name: a-{% if row.x %}yes{% else %}no{% endif %}\ndata:\n  script: |\n    {% for i in row.items %}\n    item {{ i }}\n    {% endfor %}\n",
        json!({"x": true, "items": [1, 2]}),
    )
    .unwrap();
    assert_eq!(object["metadata"]["name"], "a-yes");
    assert_eq!(object["data"]["script"], "\nitem 1\n\nitem 2\n\n");
    let include = compile_error("kind: ConfigMap\ndata:\n  a: \"{% include '0' %}\"\n");
    assert!(
        include.contains("there are no other templates to include"),
        "{include}"
    );
}

#[test]
fn comments_keys_and_escapes() {
    let object = render(
        "{# a note on its own line #}\nkind: ConfigMap\ndata:\n  a: x{# inline #}y\n  \"{{ row.k }}\": v\n  e: \"\\x7b\\x7b {{ row.k }}\"\n  jinjaTag0Q0x: literal\n",
        json!({"k": "key"}),
    )
    .unwrap();
    assert_eq!(
        object["data"],
        json!({"a": "xy", "key": "v", "e": "{{ key", "jinjaTag0Q0x": "literal"})
    );
    let duplicate = render(
        "kind: ConfigMap\ndata:\n  a: 1\n  \"{{ row.k }}\": 2\n",
        json!({"k": "a"}),
    )
    .unwrap_err();
    assert!(
        duplicate
            .starts_with("data[{{ row.k }}]: renders the key \"a\", which the object already has"),
        "{duplicate}"
    );
    let kind = render(
        "\"{{ row.k }}\": ClusterRole\nkind: ConfigMap\n",
        json!({"k": "kind"}),
    )
    .unwrap_err();
    assert!(kind.contains("renders the key \"kind\""), "{kind}");
}

#[test]
fn jinja_in_apiversion_kind_or_namespace_is_not_static() {
    let template = ObjectTemplate::compile(
        "apiVersion: \"{{ row.v }}\"\nkind: \"{{ row.k }}\"\nmetadata:\n  namespace: \"{{ row.ns }}\"\n",
    )
    .unwrap();
    assert_eq!(
        (
            template.static_api_version(),
            template.static_kind(),
            template.static_namespace()
        ),
        (None, None, None)
    );
    let here = ObjectTemplate::compile("kind: ConfigMap\nmetadata:\n  namespace: other\n").unwrap();
    assert_eq!(here.static_namespace(), Some("other"));
}

#[test]
fn runaway_templates_stop() {
    let endless = render(
        "kind: ConfigMap\ndata:\n  a: \"{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}\"\n",
        json!({}),
    )
    .unwrap_err();
    assert!(
        endless.starts_with("data.a: engine ran out of fuel"),
        "{endless}"
    );
    let huge = render(
        "kind: ConfigMap\ndata:\n  a: \"{% for i in range(2000) %}{{ row.big }}{% endfor %}\"\n",
        json!({"big": "x".repeat(1000)}),
    )
    .unwrap_err();
    assert!(huge.contains("larger than 1048576 bytes"), "{huge}");
    // The budget is the object's, not each string's.
    let many = format!(
        "kind: ConfigMap\ndata:\n{}",
        (0..3)
            .map(|i| format!("  k{i}: {{{{ row.big }}}}\n"))
            .collect::<String>()
    );
    let error = render(&many, json!({"big": "x".repeat(400_000)})).unwrap_err();
    assert!(error.starts_with("data.k2: "), "{error}");
}

#[test]
fn compiled_templates_cross_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<ObjectTemplate>();
}
