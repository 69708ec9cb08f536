//! Tag-list pagination (OCI distribution spec "Listing Tags": `n`, `last`, and the
//! RFC 8288 `Link: <url>; rel="next"` header).

use serde::Deserialize;

/// The body of `GET /v2/<name>/tags/list`.
#[derive(Debug, Deserialize)]
pub(crate) struct TagPage {
    #[serde(default)]
    pub(crate) tags: Option<Vec<String>>,
}

/// The `rel="next"` target of a `Link` header, as sent (often a path with query,
/// `/v2/a/tags/list?last=x&n=100`).
pub(crate) fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_is_extracted() {
        assert_eq!(
            next_link(r#"</v2/library/alpine/tags/list?last=3.19&n=100>; rel="next""#).as_deref(),
            Some("/v2/library/alpine/tags/list?last=3.19&n=100")
        );
        assert_eq!(next_link(r#"<https://r/x>; rel="prev""#), None);
        assert_eq!(
            next_link(r#"<https://r/p>; rel="prev", <https://r/n>; rel=next"#).as_deref(),
            Some("https://r/n")
        );
    }
}
