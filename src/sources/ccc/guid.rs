//! Service and user GUIDs: CCC prints them as 32 hex digits, configuration may spell them with
//! dashes, braces or upper case. tally uses one spelling everywhere (scopes, record keys,
//! customer keys, URLs): 32 lower-case hex digits, the API's own.

/// The GUID's canonical spelling, or `None` when `text` is not a GUID.
pub fn normalize(text: &str) -> Option<String> {
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(trimmed);
    let dashed = inner.contains('-');
    let digits: String = inner.chars().filter(|c| *c != '-').collect();
    if digits.len() != 32 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    // Dashes, if any, must be where a GUID has them (8-4-4-4-12): `abc-...` is a typo.
    if dashed {
        let groups: Vec<usize> = inner.split('-').map(str::len).collect();
        if groups != [8, 4, 4, 4, 12] {
            return None;
        }
    }
    Some(digits.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_guid_has_one_canonical_form() {
        let canonical = Some("6f9619ff8b86d011b42d00cf4fc964ff".to_owned());
        for spelling in [
            "6F9619FF-8B86-D011-B42D-00CF4FC964FF",
            "{6f9619ff-8b86-d011-b42d-00cf4fc964ff}",
            " 6f9619ff8b86d011b42d00cf4fc964ff ",
            "{6F9619FF8B86D011B42D00CF4FC964FF}",
        ] {
            assert_eq!(normalize(spelling), canonical, "{spelling}");
        }
    }

    #[test]
    fn what_is_not_a_guid_is_refused() {
        for bad in [
            "",
            "abc",
            "6f9619ff8b86d011b42d00cf4fc964f",
            "6f9619ff8b86d011b42d00cf4fc964fg",
            "6f9619ff-8b86d011-b42d-00cf-4fc964ff",
            "{6f9619ff8b86d011b42d00cf4fc964ff",
        ] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }
}
