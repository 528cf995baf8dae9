//! What one insurer is known to require of a request, learned from its
//! refusals (see [`RequirementsConfig`]).
//!
//! A partner that answers `400` naming `owner.address.apartment` for every
//! request without an apartment refuses the next one too: the call buys
//! the buyer nothing but the same refusal a round trip later, and spends a
//! slot of the partner's capacity that another application would turn into
//! a quote. The rules live in the pod's memory only (a field path each, no
//! personal data) and are learned again after a restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use osago_core::insurer::{ErrorKind, InsurerError, PollOutcome};
use osago_core::{InsurerId, QuoteRequest};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::RequirementsConfig;

/// The most fields remembered per insurer: a partner naming ever new
/// fields cannot grow the pod's memory.
const MAX_RULES: usize = 32;

/// One insurer's learned requirements.
#[derive(Debug)]
pub(crate) struct Requirements {
    insurer: InsurerId,
    config: RequirementsConfig,
    /// Field path -> what was learned of it.
    rules: Mutex<HashMap<String, Rule>>,
    /// Some rule holds (`learn_after` refusals): requests are checked.
    holding: AtomicBool,
    /// `rules` is not empty: answers are learned from. Both false, the
    /// common case (nothing learned), takes no lock.
    counting: AtomicBool,
}

#[derive(Debug)]
struct Rule {
    /// Refusals in a row naming the field, each of a request lacking it.
    refusals: u32,
    /// The last of them (the oldest counts are dropped first when full).
    refused_at: Instant,
    /// When a request lacking the field may go as a probe.
    probe_at: Instant,
}

impl Requirements {
    pub(crate) fn new(insurer: InsurerId, config: RequirementsConfig) -> Self {
        Self {
            insurer,
            config,
            rules: Mutex::default(),
            holding: AtomicBool::new(false),
            counting: AtomicBool::new(false),
        }
    }

    /// Sets the flags from `rules`.
    fn flag(&self, rules: &HashMap<String, Rule>) {
        let holding = rules
            .values()
            .any(|r| r.refusals >= self.config.learn_after);
        self.holding.store(holding, Ordering::Relaxed);
        self.counting.store(!rules.is_empty(), Ordering::Relaxed);
    }

    /// The refusal the insurer would give `request` (naming the learned
    /// fields it lacks), when its application should not be sent; `None`:
    /// send it (nothing learned is missing, or it goes as a probe of a rule
    /// whose probe is due). `probe_every` is at most a day (validated).
    pub(crate) fn unmet(&self, request: &QuoteRequest) -> Option<InsurerError> {
        if self.config.learn_after == 0 || !self.holding.load(Ordering::Relaxed) {
            return None;
        }
        let json = serde_json::to_value(request).ok()?;
        let now = Instant::now();
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let mut fields = Vec::new();
        let mut probe = false;
        for (field, rule) in rules.iter_mut() {
            if rule.refusals < self.config.learn_after || absent(&json, field) != Some(true) {
                continue;
            }
            if now >= rule.probe_at {
                rule.probe_at = now + self.config.probe_every;
                probe = true;
            }
            fields.push(field.clone());
        }
        if probe || fields.is_empty() {
            return None;
        }
        fields.sort();
        Some(InsurerError::needs_more_data(fields))
    }

    /// Learns from how an application for `request` ended: a refusal
    /// naming fields the request lacks counts toward a rule for each; an
    /// answer (a quote or a decline) forgets every rule on a field the
    /// request lacks, the insurer having done without it.
    pub(crate) fn learn(&self, request: &QuoteRequest, result: &Result<PollOutcome, InsurerError>) {
        if self.config.learn_after == 0 {
            return;
        }
        match result {
            Err(err) if err.kind == ErrorKind::Rejected && !err.fields.is_empty() => {
                self.refused(request, &err.fields);
            }
            Ok(PollOutcome::Quoted(_) | PollOutcome::Declined { .. }) => self.answered(request),
            _ => {}
        }
    }

    fn refused(&self, request: &QuoteRequest, fields: &[String]) {
        let Ok(json) = serde_json::to_value(request) else {
            return;
        };
        // Field paths only (an embedder's client may put anything in
        // `fields`), of fields this request format has (a name it does not
        // have would be missing from every request), missing from this one.
        let lacking: Vec<&String> = fields
            .iter()
            .filter(|f| osago_core::insurer_text::is_field_path(f) && known(f))
            .filter(|f| absent(&json, f) == Some(true))
            .collect();
        if lacking.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        for field in lacking {
            if rules.len() >= MAX_RULES && !rules.contains_key(field.as_str()) {
                // Full: the stalest count that is not yet a rule makes room.
                let stalest = rules
                    .iter()
                    .filter(|(_, r)| r.refusals < self.config.learn_after)
                    .min_by_key(|(_, r)| r.refused_at)
                    .map(|(f, _)| f.clone());
                match stalest {
                    Some(stalest) => rules.remove(&stalest),
                    None => continue,
                };
            }
            let rule = rules.entry(field.clone()).or_insert(Rule {
                refusals: 0,
                refused_at: now,
                probe_at: now,
            });
            rule.refusals = rule.refusals.saturating_add(1);
            rule.refused_at = now;
            if rule.refusals == self.config.learn_after {
                rule.probe_at = now + self.config.probe_every;
                tracing::info!(insurer = %self.insurer, field = %field, refusals = rule.refusals, "the insurer refuses requests lacking this field: they are answered without a call, one sent as a probe every {:?}", self.config.probe_every);
            }
        }
        self.flag(&rules);
    }

    fn answered(&self, request: &QuoteRequest) {
        if !self.counting.load(Ordering::Relaxed) {
            return;
        }
        let Ok(json) = serde_json::to_value(request) else {
            return;
        };
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        rules.retain(|field, rule| {
            let keep = absent(&json, field) != Some(true);
            if !keep && rule.refusals >= self.config.learn_after {
                tracing::info!(insurer = %self.insurer, field = %field, "the insurer answered a request lacking this field: such requests are sent again");
            }
            keep
        });
        self.flag(&rules);
    }
}

/// Whether this request format has a field at `path`: a sample request
/// with every optional field filled has it.
fn known(path: &str) -> bool {
    static FULL: OnceLock<Value> = OnceLock::new();
    let full = FULL.get_or_init(|| {
        let mut r = osago_core::request::sample();
        let text = Some("x".to_owned());
        r.policy.start_date = Some(chrono::NaiveDate::MIN);
        r.vehicle.vin = text.clone();
        r.vehicle.body_number = text.clone();
        r.vehicle.chassis_number = text.clone();
        r.vehicle.plate = text.clone();
        r.vehicle.engine_power_hp = Some(1);
        r.vehicle.document.series = text.clone();
        r.owner.kbm_class = Some(r.drivers.list[0].kbm_class);
        r.owner.address.apartment = text;
        r.consent.given_at = Some(chrono::DateTime::UNIX_EPOCH);
        serde_json::to_value(r).unwrap_or_default()
    });
    absent(full, path) == Some(false)
}

/// Whether `path` (`owner.address.apartment`, `drivers.list[0].licence`)
/// is missing from `root`: absent, null, blank text or an empty list.
/// `None` when its parent is not there either: then the insurer named
/// something this request does not have the shape for, and nothing is
/// learned from it.
fn absent(root: &Value, path: &str) -> Option<bool> {
    let (parent, last) = match path.rsplit_once('.') {
        Some((parent, last)) => (Some(parent), last),
        None => (None, path),
    };
    let mut at = root;
    for segment in parent.into_iter().flat_map(|p| p.split('.')) {
        let (name, index) = segment_of(segment)?;
        at = at.as_object()?.get(name)?;
        if let Some(i) = index {
            at = at.as_array()?.get(i)?;
        }
    }
    let (name, index) = segment_of(last)?;
    let value = match at.as_object()?.get(name) {
        None | Some(Value::Null) => return Some(true),
        Some(value) => value,
    };
    let value = match index {
        None => value,
        Some(i) => match value.as_array()?.get(i) {
            None => return Some(true),
            Some(value) => value,
        },
    };
    Some(match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    })
}

/// `name` or `name[index]`.
fn segment_of(segment: &str) -> Option<(&str, Option<usize>)> {
    match segment.split_once('[') {
        None => Some((segment, None)),
        Some((name, rest)) => {
            let index = rest.strip_suffix(']')?.parse().ok()?;
            Some((name, Some(index)))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_field_is_absent_when_missing_null_blank_or_empty() {
        let doc = json!({
            "owner": {"address": {"city": "Moscow", "house": " ", "flat": null}},
            "drivers": {"list": [{"licence": "77AA"}], "none": []},
            "vehicle": {"year": 2020, "trailer": false},
        });
        assert_eq!(absent(&doc, "owner.address.apartment"), Some(true));
        assert_eq!(absent(&doc, "owner.address.flat"), Some(true));
        assert_eq!(absent(&doc, "owner.address.house"), Some(true));
        assert_eq!(absent(&doc, "owner.address.city"), Some(false));
        assert_eq!(absent(&doc, "drivers.none"), Some(true));
        assert_eq!(absent(&doc, "drivers.list"), Some(false));
        assert_eq!(absent(&doc, "drivers.list[0].licence"), Some(false));
        assert_eq!(absent(&doc, "drivers.list[0].birth_date"), Some(true));
        assert_eq!(absent(&doc, "drivers.list[1]"), Some(true));
        assert_eq!(absent(&doc, "vehicle.year"), Some(false));
        assert_eq!(absent(&doc, "vehicle.trailer"), Some(false));
        assert_eq!(absent(&doc, "consent"), Some(true));
    }

    #[test]
    fn a_field_whose_parent_is_not_there_is_not_judged() {
        let doc = json!({"owner": {"name": "x"}, "drivers": {"list": []}});
        assert_eq!(absent(&doc, "owner.address.apartment"), None);
        assert_eq!(absent(&doc, "drivers.list[0].licence"), None);
        assert_eq!(absent(&doc, "owner.name.first"), None);
        assert_eq!(absent(&doc, "owner[0]"), None);
        assert_eq!(absent(&doc, "drivers.list[x]"), None);
    }

    #[test]
    fn only_fields_of_the_request_format_are_known() {
        for path in [
            "owner.address.apartment",
            "owner.kbm_class",
            "policy.start_date",
            "vehicle.body_number",
            "vehicle.document.series",
            "consent.given_at",
            "drivers.list[0].licence.series",
        ] {
            assert!(known(path), "{path}");
        }
        for path in [
            "owner.address.flat",
            "body",
            "drivers.list[7]",
            "vehicle.vin.x",
        ] {
            assert!(!known(path), "{path}");
        }
    }

    #[test]
    fn the_sample_request_lacks_an_apartment() {
        let json = serde_json::to_value(osago_core::request::sample()).unwrap();
        assert_eq!(absent(&json, "owner.address.apartment"), Some(true));
        assert_eq!(absent(&json, "owner.address.house"), Some(false));
    }
}
