//! The `Link` response header (RFC 8288): which page comes next.

use reqwest::Url;

/// One `<url>; param=value; ...` entry of a `Link` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEntry {
    /// The target, as written between `<` and `>` (possibly relative).
    pub target: String,
    /// The link relations of `rel`, lower-cased (`rel="next last"` holds two).
    pub rels: Vec<String>,
}

/// Parses one or more `Link` header values into their entries.
///
/// Commas separate entries but may also appear inside a `<url>` or a quoted parameter, so
/// the split tracks both rather than splitting on every comma.
pub fn parse_link_header<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<LinkEntry> {
    let mut entries = Vec::new();
    for value in values {
        for raw in split_outside(value, ',') {
            if let Some(entry) = parse_entry(raw) {
                entries.push(entry);
            }
        }
    }
    entries
}

/// The target of the first entry whose relations include `rel`, resolved against `base` (the
/// request's URL) so that a relative link works too.
pub fn find_rel(entries: &[LinkEntry], rel: &str, base: &Url) -> Option<Result<Url, String>> {
    let entry = entries
        .iter()
        .find(|e| e.rels.iter().any(|r| r.eq_ignore_ascii_case(rel)))?;
    Some(
        base.join(&entry.target)
            .map_err(|e| format!("rel=\"{rel}\" link {:?} is not a URL: {e}", entry.target)),
    )
}

fn parse_entry(raw: &str) -> Option<LinkEntry> {
    let raw = raw.trim();
    let rest = raw.strip_prefix('<')?;
    let end = rest.find('>')?;
    let target = rest[..end].trim().to_owned();
    let mut rels = Vec::new();
    for param in split_outside(&rest[end + 1..], ';') {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("rel") {
            let value = value.trim().trim_matches('"');
            rels.extend(value.split_ascii_whitespace().map(str::to_ascii_lowercase));
        }
    }
    Some(LinkEntry { target, rels })
}

/// Splits on `separator` where it is neither inside `<...>` nor inside `"..."`.
fn split_outside(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut in_angle, mut in_quote, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if in_quote {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_quote = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' if !in_angle => in_quote = true,
            '<' => in_angle = true,
            '>' => in_angle = false,
            c if c == separator && !in_angle => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://api.example.com/v1/account/billable_users?page=2").unwrap()
    }

    #[test]
    fn finds_next_among_several_relations() {
        let header = r#"<https://api.example.com/v1/account/billable_users?month=10&page=1&per_page=100&year=2015>; rel="first", <https://api.example.com/v1/account/billable_users?month=10&page=1&per_page=100&year=2015>; rel="prev", <https://api.example.com/v1/account/billable_users?month=10&page=3&per_page=100&year=2015>; rel="next", <https://api.example.com/v1/account/billable_users?month=10&page=7&per_page=100&year=2015>; rel="last""#;
        let entries = parse_link_header([header]);
        assert_eq!(entries.len(), 4);
        let next = find_rel(&entries, "next", &base()).unwrap().unwrap();
        assert!(next.as_str().contains("page=3"), "{next}");
        let last = find_rel(&entries, "last", &base()).unwrap().unwrap();
        assert!(last.as_str().contains("page=7"), "{last}");
    }

    #[test]
    fn no_next_relation_means_the_last_page() {
        let header = r#"<https://x.example/v1/a?page=1>; rel="first", <https://x.example/v1/a?page=2>; rel="prev""#;
        assert!(find_rel(&parse_link_header([header]), "next", &base()).is_none());
        assert!(find_rel(&parse_link_header([""]), "next", &base()).is_none());
    }

    #[test]
    fn commas_inside_urls_and_quotes_do_not_split_entries() {
        let header = r#"<https://x.example/v1/a?ids=1,2&page=5>; title="a, b"; rel=next, <https://x.example/v1/a?page=9>; rel="last""#;
        let entries = parse_link_header([header]);
        assert_eq!(entries.len(), 2, "{entries:?}");
        let next = find_rel(&entries, "next", &base()).unwrap().unwrap();
        assert_eq!(next.as_str(), "https://x.example/v1/a?ids=1,2&page=5");
    }

    #[test]
    fn relations_are_case_insensitive_and_may_be_several_and_links_relative() {
        let entries = parse_link_header([
            r#"</v1/account/billable_users?page=4>; REL="Next Last""#,
            r#"<https://x.example/v1/a?page=1>; rel="first""#,
        ]);
        let next = find_rel(&entries, "next", &base()).unwrap().unwrap();
        assert_eq!(
            next.as_str(),
            "https://api.example.com/v1/account/billable_users?page=4"
        );
    }
}
