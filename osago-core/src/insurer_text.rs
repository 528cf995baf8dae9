//! What an insurer writes in free text (a decline reason, a note on a
//! quote) before anyone else reads it: the quote and error topics, the
//! read model and the page must never carry personal data, and an
//! insurer's text may echo what it was sent.

use crate::request::QuoteRequest;

/// The longest insurer text passed on, in characters.
pub const MAX_INSURER_TEXT: usize = 200;

/// `text` as it may be passed on, or `None` when it must not be: trimmed,
/// whitespace collapsed, at most [`MAX_INSURER_TEXT`] characters; dropped
/// whole when it holds anything that looks like personal data (an e-mail
/// address, a run of 5 or more digits such as a passport, licence or phone
/// number, a VIN-like token) or any personal value of `request` (a name,
/// the plate, the VIN, a document number, the street), compared without
/// case.
pub fn sanitize(text: &str, request: &QuoteRequest) -> Option<String> {
    let collapsed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return None;
    }
    let clipped: String = collapsed.chars().take(MAX_INSURER_TEXT).collect();
    if looks_personal(&clipped) || echoes(&clipped, request) {
        return None;
    }
    Some(clipped)
}

/// An e-mail address, 5 or more digits in a row (spaces and dashes
/// between them count as a run), or a 17-character letters-and-digits
/// token (a VIN).
fn looks_personal(text: &str) -> bool {
    if text.contains('@') {
        return true;
    }
    let mut digits = 0;
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits += 1;
            if digits >= 5 {
                return true;
            }
        } else if c != ' ' && c != '-' {
            digits = 0;
        }
    }
    text.split(|c: char| !c.is_alphanumeric())
        .any(|token| token.chars().count() == 17 && token.chars().any(|c| c.is_ascii_digit()))
}

/// Whether `text` contains one of the request's personal values (names
/// word by word, from 3 letters).
fn echoes(text: &str, request: &QuoteRequest) -> bool {
    let haystack = text.to_lowercase();
    let mut values: Vec<&str> = Vec::new();
    let owner = &request.owner;
    values.extend(owner.full_name.split_whitespace());
    for driver in &request.drivers.list {
        values.extend(driver.full_name.split_whitespace());
        values.push(&driver.licence.number);
    }
    values.push(&owner.passport.number);
    values.push(&owner.address.street);
    let vehicle = &request.vehicle;
    for value in [
        &vehicle.vin,
        &vehicle.plate,
        &vehicle.body_number,
        &vehicle.chassis_number,
    ]
    .into_iter()
    .flatten()
    {
        values.push(value);
    }
    values.push(&vehicle.document.number);
    values.push(&request.contact.email);
    values.push(&request.contact.phone);
    values
        .iter()
        .map(|v| v.trim())
        .filter(|v| v.chars().count() >= 3)
        .any(|v| haystack.contains(&v.to_lowercase()))
}

/// Whether `path` is a field path as the request names one
/// (`owner.address.apartment`, `drivers.list[0].licence.number`): what an
/// insurer's "needs more data" may name, and nothing else.
pub fn is_field_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 64
        && path.split('.').all(|segment| {
            let (name, rest) = match segment.find('[') {
                Some(i) => segment.split_at(i),
                None => (segment, ""),
            };
            let name_ok =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            let index_ok = rest.is_empty()
                || rest
                    .strip_prefix('[')
                    .and_then(|r| r.strip_suffix(']'))
                    .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
            name_ok && index_ok
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::sample;

    #[test]
    fn plain_reasons_pass_and_personal_ones_do_not() {
        let request = sample();
        assert_eq!(
            sanitize("  declined   by\nunderwriting ", &request).as_deref(),
            Some("declined by underwriting")
        );
        assert_eq!(
            sanitize("Отказ: регион не обслуживается", &request).as_deref(),
            Some("Отказ: регион не обслуживается")
        );
        for personal in [
            "call us at +7 916 123-45-67",
            "write to agent@insurer.example",
            "passport 4510 123456 is invalid",
            "vin XTAGFL110MY123456 is banned",
            "Иванов is not insurable",
            "the car а123вс777 is in the stop list",
        ] {
            assert_eq!(sanitize(personal, &request), None, "{personal}");
        }
        assert_eq!(sanitize("   ", &request), None);
        let long = "a".repeat(500);
        assert_eq!(
            sanitize(&long, &request).unwrap().chars().count(),
            MAX_INSURER_TEXT
        );
    }

    #[test]
    fn only_field_paths_are_field_paths() {
        for good in [
            "owner.address.apartment",
            "drivers.list[0].licence.number",
            "vin",
        ] {
            assert!(is_field_path(good), "{good}");
        }
        for bad in [
            "",
            "Иванов Иван",
            "owner.address.apartment 12",
            "drivers.list[x]",
            "owner..name",
            "owner.Name",
            &"a".repeat(65),
        ] {
            assert!(!is_field_path(bad), "{bad}");
        }
    }
}
