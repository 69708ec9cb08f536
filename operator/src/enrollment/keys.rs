//! Every unknown key of an enrollment, found in one pass.
//!
//! serde stops at the first unknown field. To report them all, the file is read a second
//! time into a plain tree of located keys and walked against the JSON Schema derived from
//! the same types (`schema::EnrollmentFile`), so both always agree on what is known.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::diagnostic::Diagnostic;
use super::schema::{EnrollmentFile, Located};

/// A YAML document reduced to its shape: mappings with located keys, sequences, scalars.
enum Tree {
    Map(Vec<(Located<String>, Tree)>),
    Seq(Vec<Tree>),
    Scalar,
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Located<String>>()? {
            entries.push((key, map.next_value::<Tree>()?));
        }
        Ok(Tree::Map(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Tree>()? {
            items.push(item);
        }
        Ok(Tree::Seq(items))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        Tree::deserialize(d)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
    fn visit_str<E>(self, _: &str) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
    fn visit_none<E>(self) -> Result<Tree, E> {
        Ok(Tree::Scalar)
    }
}

/// Every key of `text` that the enrollment schema does not know, located, with the
/// closest known key as a hint. Empty when the text is not YAML (the parser's own error
/// says why) or has no unknown keys.
pub(super) fn unknown_keys(file: &str, text: &str) -> Vec<Diagnostic> {
    let Ok(tree) = serde_saphyr::from_str_with_options::<Tree>(text, super::yaml_options()) else {
        return Vec::new();
    };
    let Ok(schema) = serde_json::to_value(schemars::schema_for!(EnrollmentFile)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(file, &tree, &schema, &schema, "", &mut out);
    out
}

/// Follows `$ref` and takes the non-null branch of `anyOf` / `oneOf` (optional fields).
fn resolve<'a>(node: &'a Value, root: &'a Value) -> &'a Value {
    if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let name = reference.trim_start_matches("#/$defs/");
        if let Some(target) = root.get("$defs").and_then(|d| d.get(name)) {
            return resolve(target, root);
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = node.get(key).and_then(Value::as_array) {
            if let Some(branch) = branches
                .iter()
                .find(|b| b.get("type").and_then(Value::as_str) != Some("null"))
            {
                return resolve(branch, root);
            }
        }
    }
    node
}

fn walk(
    file: &str,
    tree: &Tree,
    node: &Value,
    root: &Value,
    path: &str,
    out: &mut Vec<Diagnostic>,
) {
    let node = resolve(node, root);
    match tree {
        Tree::Map(entries) => {
            let properties = node.get("properties").and_then(Value::as_object);
            let additional = node.get("additionalProperties");
            for (key, value) in entries {
                let child_path = if path.is_empty() {
                    key.value.clone()
                } else {
                    format!("{path}.{}", key.value)
                };
                if let Some(schema) = properties.and_then(|p| p.get(&key.value)) {
                    walk(file, value, schema, root, &child_path, out);
                } else if additional == Some(&Value::Bool(false)) {
                    let known: Vec<&str> = properties
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    out.push(unknown(file, key, path, &known));
                } else if let Some(schema) = additional.filter(|a| a.is_object()) {
                    walk(file, value, schema, root, &child_path, out);
                }
            }
        }
        Tree::Seq(items) => {
            if let Some(schema) = node.get("items") {
                for item in items {
                    walk(file, item, schema, root, path, out);
                }
            }
        }
        Tree::Scalar => {}
    }
}

fn unknown(file: &str, key: &Located<String>, path: &str, known: &[&str]) -> Diagnostic {
    let place = if path.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in {path}")
    };
    let closest = known
        .iter()
        .map(|k| {
            (
                strsim::levenshtein(&k.to_lowercase(), &key.value.to_lowercase()),
                *k,
            )
        })
        .min();
    let hint = match closest {
        Some((distance, k)) if distance <= 3 => format!("did you mean {k:?}?"),
        _ => format!("known keys here: {}", known.join(", ")),
    };
    let retired = matches!(key.value.as_str(), "allowTags" | "ignoreTags");
    let hint = if retired {
        format!(
            "Kargo ≥ 1.11 rejects {:?}; use {:?} (a list of regular expressions)",
            key.value,
            format!("{}Regexes", key.value)
        )
    } else {
        hint
    };
    Diagnostic::error(file, key.at, format!("unknown key {:?} {place}", key.value)).hint(hint)
}
