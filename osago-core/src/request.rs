//! The quote request a person fills in, and its validation.
//!
//! Shape errors (a wrong type, a missing field) are found while decoding and
//! reported by [`decode`] with the path of the offending field. Business rules
//! are checked by [`QuoteRequest::validate`], which reports every violation at
//! once. Messages never echo the submitted values: they may be personal data.

use std::fmt;
use std::sync::LazyLock;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::directive::{self, KbmClass};

/// The longest policy start, in days from today.
pub const MAX_START_DAYS_AHEAD: i64 = 60;

/// A complete OSAGO quote request.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct QuoteRequest {
    /// The policy asked for.
    pub policy: Policy,
    /// The insured vehicle.
    pub vehicle: Vehicle,
    /// The vehicle's owner (the policy holder).
    pub owner: Owner,
    /// Who may drive.
    pub drivers: Drivers,
    /// How to reach the person.
    pub contact: Contact,
    /// Consent to the processing of personal data (152-FZ).
    pub consent: Consent,
}

/// Personal data: never printed.
impl fmt::Debug for QuoteRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuoteRequest")
            .field("category", &self.vehicle.category)
            .field("region", &self.owner.address.region_code)
            .field("drivers", &self.drivers.list.len())
            .finish_non_exhaustive()
    }
}

/// `Debug` for a type holding personal data: its name and nothing else, so
/// no `{:?}` (a log line, a panic message, an error) can leak it. One place
/// for every such type; [`QuoteRequest`] and [`Vehicle`] print their
/// non-personal fields.
macro_rules! personal_data {
    ($($ty:ident),+ $(,)?) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($ty), " { <personal data> }"))
            }
        }
    )+};
}

personal_data!(
    VehicleDocument,
    Owner,
    Passport,
    Address,
    Drivers,
    Driver,
    Licence,
    Contact
);

/// The VIN, body and chassis numbers, the plate and the document are
/// personal data; make, model and the rest are not.
impl fmt::Debug for Vehicle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vehicle")
            .field("category", &self.category)
            .field("make", &self.make)
            .field("model", &self.model)
            .field("year", &self.year)
            .field("engine_power_hp", &self.engine_power_hp)
            .field("has_trailer", &self.has_trailer)
            .finish_non_exhaustive()
    }
}

/// The policy terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Policy {
    /// First day of cover; tomorrow when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<NaiveDate>,
    /// Months of use per year, 3 to 12 (drives KS).
    pub usage_period_months: u8,
    /// What the vehicle is used for.
    pub purpose: Purpose,
    /// Gross violations in the last year (KN 1.5, cap 5x).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gross_violations: bool,
}

impl Policy {
    /// The start date, defaulting to the day after `today`.
    pub fn effective_start(&self, today: NaiveDate) -> NaiveDate {
        self.start_date
            .unwrap_or_else(|| today + chrono::Duration::days(1))
    }
}

/// Vehicle use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Purpose {
    /// Personal use.
    Personal,
    /// Taxi.
    Taxi,
    /// Driving school.
    Training,
    /// Rental.
    Rental,
    /// Anything else.
    Other,
}

/// Vehicle category on the registration document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Category {
    /// Motorcycles.
    A,
    /// Cars.
    B,
    /// Cars with a heavy trailer.
    BE,
    /// Trucks.
    C,
    /// Trucks with a trailer.
    CE,
    /// Buses.
    D,
    /// Buses with a trailer.
    DE,
}

impl Category {
    /// The youngest a driver of this category may be (the road-safety
    /// law, art. 26): 21 for buses (D, DE), 18 for the rest, 16 for
    /// motorcycles (their light subcategory A1, which this model does not
    /// tell apart, is allowed from 16).
    pub fn minimum_driver_age(self) -> i32 {
        match self {
            Category::A => 16,
            Category::D | Category::DE => 21,
            Category::B | Category::BE | Category::C | Category::CE => 18,
        }
    }

    /// B or BE, the cars, where engine power drives KM.
    pub fn is_car(self) -> bool {
        matches!(self, Category::B | Category::BE)
    }
}

/// The vehicle.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Vehicle {
    /// Category (B is the main case).
    pub category: Category,
    /// Make.
    pub make: String,
    /// Model.
    pub model: String,
    /// Year of manufacture.
    pub year: u16,
    /// Engine power in horsepower; required for B/BE.
    #[serde(default)]
    pub engine_power_hp: Option<u16>,
    /// VIN; one of VIN, body number, chassis number is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vin: Option<String>,
    /// Body number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_number: Option<String>,
    /// Chassis number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chassis_number: Option<String>,
    /// Registration plate (absent for a new, unregistered car).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plate: Option<String>,
    /// A trailer is used (KPr).
    #[serde(default)]
    pub has_trailer: bool,
    /// The registration document.
    pub document: VehicleDocument,
}

/// Kind of vehicle document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum DocumentKind {
    /// Registration certificate (СТС).
    Sts,
    /// Paper vehicle passport (ПТС).
    Pts,
    /// Electronic vehicle passport (ЭПТС).
    Epts,
}

/// The vehicle's document.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct VehicleDocument {
    /// Kind.
    pub kind: DocumentKind,
    /// Series (4 characters; none for an ePTS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
    /// Number (6 digits; 15 for an ePTS).
    pub number: String,
    /// Date of issue.
    pub issue_date: NaiveDate,
}

/// The owner.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Owner {
    /// Full name.
    pub full_name: String,
    /// Birth date.
    pub birth_date: NaiveDate,
    /// Passport.
    pub passport: Passport,
    /// Registration address; its region drives KT.
    pub address: Address,
    /// The owner's KBM class, used with unlimited drivers (class 3 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kbm_class: Option<KbmClass>,
}

/// A Russian internal passport.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Passport {
    /// Series, 4 digits.
    pub series: String,
    /// Number, 6 digits.
    pub number: String,
    /// Date of issue.
    pub issue_date: NaiveDate,
}

/// A registration address.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Address {
    /// Two-digit region code, e.g. "77" (drives KT).
    pub region_code: String,
    /// City or settlement.
    pub city: String,
    /// Street.
    pub street: String,
    /// House.
    pub house: String,
    /// Apartment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apartment: Option<String>,
}

/// Who may drive.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Drivers {
    /// Anyone may drive (KO 2.32).
    #[serde(default)]
    pub unlimited: bool,
    /// The named drivers (required unless unlimited).
    #[serde(default)]
    pub list: Vec<Driver>,
}

/// A named driver.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Driver {
    /// Full name.
    pub full_name: String,
    /// Birth date.
    pub birth_date: NaiveDate,
    /// Driving licence.
    pub licence: Licence,
    /// Date the driving experience began.
    pub experience_start: NaiveDate,
    /// Bonus-malus class (a new driver starts in class 3).
    pub kbm_class: KbmClass,
}

/// A driving licence.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Licence {
    /// Series, 4 characters.
    pub series: String,
    /// Number, 6 digits.
    pub number: String,
}

/// Contact details.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Contact {
    /// Phone, `7` and ten digits.
    pub phone: String,
    /// E-mail.
    pub email: String,
}

/// The version of the consent text to processing that the page links
/// (`/consent/processing`); a request must name it.
pub const PROCESSING_TEXT_VERSION: &str = "processing-2026-11-30";

/// The version of the consent text to transfer to insurers that the page
/// links (`/consent/transfer`); a request must name it.
pub const TRANSFER_TEXT_VERSION: &str = "transfer-2026-11-30";

/// The two separate consents the amended 152-FZ asks for (in force since
/// 2025-09-01): to processing, and to transfer to the listed insurers, each
/// naming the version of the text the person was shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Consent {
    /// Consent to processing (must be true).
    pub personal_data: bool,
    /// Consent to transfer to the insurers (must be true).
    #[serde(default)]
    pub transfer_to_insurers: bool,
    /// The version of the processing text shown ([`PROCESSING_TEXT_VERSION`]).
    #[serde(default)]
    pub personal_data_text: String,
    /// The version of the transfer text shown ([`TRANSFER_TEXT_VERSION`]).
    #[serde(default)]
    pub transfer_text: String,
    /// When the server received them: core-app stamps it from its own
    /// clock and replaces whatever a client sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_at: Option<DateTime<Utc>>,
}

/// The consents as the server recorded them, stored with the request and
/// deleted with it; never published (the client address is personal data
/// insurers have no use for).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    /// When core-app received them (its clock).
    pub given_at: DateTime<Utc>,
    /// The processing text's version.
    pub personal_data_text: String,
    /// The transfer text's version.
    pub transfer_text: String,
    /// The address the request came from (the client, behind trusted
    /// proxies).
    pub client_address: std::net::IpAddr,
}

impl ConsentRecord {
    /// The record of `event`'s consents, received when the event was
    /// created, from `client`.
    pub fn received(event: &crate::RequestEvent, client: std::net::IpAddr) -> Self {
        Self::of(&event.request, event.occurred_at, client)
    }

    /// The record of `request`'s consents, received `at` from `client`.
    pub fn of(request: &QuoteRequest, at: DateTime<Utc>, client: std::net::IpAddr) -> Self {
        Self {
            given_at: at,
            personal_data_text: request.consent.personal_data_text.clone(),
            transfer_text: request.consent.transfer_text.clone(),
            client_address: client,
        }
    }
}

/// Personal data: the address is never printed.
impl fmt::Debug for ConsentRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsentRecord")
            .field("given_at", &self.given_at)
            .field("personal_data_text", &self.personal_data_text)
            .field("transfer_text", &self.transfer_text)
            .finish_non_exhaustive()
    }
}

pub use crate::violation::Violation;

/// One violated rule: where, and what is wrong. No message contains the
/// submitted value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Dotted JSON path, e.g. `drivers.list[0].birth_date`.
    pub path: String,
    /// The rule's stable code ([`Violation::code`]), for a client's own
    /// messages.
    #[serde(default)]
    pub code: String,
    /// What is wrong, in lower case English.
    pub message: String,
    /// What is wrong, in Russian, as the buyer reads it next to the field.
    #[serde(default)]
    pub message_ru: String,
}

impl FieldError {
    /// A violation of `rule` at `path`.
    pub fn new(path: impl Into<String>, rule: Violation) -> Self {
        Self {
            path: path.into(),
            code: rule.code().to_owned(),
            message: rule.english(),
            message_ru: rule.russian(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a body is not a quote request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all (or truncated).
    #[error("body is not valid JSON")]
    Syntax,
    /// JSON of the wrong shape; the path names the field.
    #[error("request does not match the schema")]
    Shape(FieldError),
}

/// Decodes a JSON body, naming the offending field on a shape error.
pub fn decode(body: &[u8]) -> Result<QuoteRequest, DecodeError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    // The types accept unknown fields (events must survive a newer writer
    // adding one); the HTTP API does not: the first field the types ignored
    // is an error, named by its path.
    let mut unknown: Option<String> = None;
    let mut note = |path: serde_ignored::Path<'_>| {
        if unknown.is_none() {
            unknown = Some(ignored_path(&path));
        }
    };
    let tracked = serde_ignored::Deserializer::new(de, &mut note);
    match serde_path_to_error::deserialize::<_, QuoteRequest>(tracked) {
        Ok(_) if unknown.is_some() => Err(DecodeError::Shape(FieldError::new(
            unknown.unwrap_or_default(),
            Violation::UnknownField,
        ))),
        Ok(request) => Ok(request),
        Err(err) => {
            let inner = err.inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(DecodeError::Syntax);
            }
            let mut path = dotted(&err.path().to_string());
            let text = inner.to_string();
            // serde_json messages may quote the submitted value; keep none of it.
            let message = if let Some(field) = text
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                path = join_path(&path, field);
                Violation::Required
            } else if text.starts_with("unknown field") {
                Violation::UnknownField
            } else if text.starts_with("unknown variant") {
                Violation::NotAllowed
            } else {
                Violation::InvalidFormat
            };
            Err(DecodeError::Shape(FieldError::new(path, message)))
        }
    }
}

/// A path as the API names it: `drivers.list[0].licence`.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => join_path(&ignored_path(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

fn dotted(path: &str) -> String {
    if path == "." {
        String::new()
    } else {
        path.to_owned()
    }
}

fn join_path(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

static VIN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-HJ-NPR-Z0-9]{17}$").unwrap());
static PLATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[ABEKMHOPCTYXАВЕКМНОРСТУХ]\d{3}[ABEKMHOPCTYXАВЕКМНОРСТУХ]{2}\d{2,3}$").unwrap()
});
static MOTO_PLATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d{4}[ABEKMHOPCTYXАВЕКМНОРСТУХ]{2}\d{2,3}$").unwrap());
static DIGITS4: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\d{4}$").unwrap());
static DIGITS6: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\d{6}$").unwrap());
static DIGITS15: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\d{15}$").unwrap());
static DOC_SERIES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d{2}[0-9A-ZА-ЯЁ]{2}$").unwrap());
static PHONE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^7\d{10}$").unwrap());
static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$").unwrap());
static FRAME_NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[0-9A-Z\-]{5,20}$").unwrap());

/// Full years between two dates.
pub fn years_between(from: NaiveDate, to: NaiveDate) -> i32 {
    let mut years = to.year() - from.year();
    if (to.month(), to.day()) < (from.month(), from.day()) {
        years -= 1;
    }
    years
}

/// Cyrillic letters that look like Latin ones, and their Latin twins: the
/// twelve a Russian plate uses.
const LOOK_ALIKES: [(char, char); 12] = [
    ('А', 'A'),
    ('В', 'B'),
    ('Е', 'E'),
    ('К', 'K'),
    ('М', 'M'),
    ('Н', 'H'),
    ('О', 'O'),
    ('Р', 'P'),
    ('С', 'C'),
    ('Т', 'T'),
    ('У', 'Y'),
    ('Х', 'X'),
];

/// `value` without whitespace, in upper case, each look-alike pair mapped
/// by `pick` (which side of a pair to keep).
fn canonical(value: &str, pick: fn(&(char, char)) -> (char, char)) -> String {
    value
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .map(|c| {
            LOOK_ALIKES
                .iter()
                .map(pick)
                .find(|(from, _)| *from == c)
                .map_or(c, |(_, to)| to)
        })
        .collect()
}

/// A VIN, body or chassis number as typed, made canonical: spaces
/// dropped, upper case, Cyrillic look-alikes as their Latin letters
/// (`хта гфл` -> `XTA...`; `Г` stays and fails validation).
pub fn normalize_vin(value: &str) -> String {
    canonical(value, |&(cyr, lat)| (cyr, lat))
}

/// A plate as typed, made canonical: spaces dropped, upper case, Latin
/// look-alikes as the Cyrillic letters a Russian plate has (`a123bc 77` ->
/// `А123ВС77`).
pub fn normalize_plate(value: &str) -> String {
    canonical(value, |&(cyr, lat)| (lat, cyr))
}

impl QuoteRequest {
    /// Makes what a person types canonical before validation: the VIN,
    /// body and chassis numbers (Latin, upper case, no spaces), the plate
    /// (Cyrillic, upper case, no spaces) and document series (upper case,
    /// no spaces). Idempotent.
    pub fn normalize(&mut self) {
        let v = &mut self.vehicle;
        for number in [&mut v.vin, &mut v.body_number, &mut v.chassis_number]
            .into_iter()
            .flatten()
        {
            *number = normalize_vin(number);
        }
        if let Some(plate) = &mut v.plate {
            *plate = normalize_plate(plate);
        }
        let series = |s: &str| -> String {
            s.chars()
                .filter(|c| !c.is_whitespace())
                .flat_map(char::to_uppercase)
                .collect()
        };
        if let Some(s) = &mut v.document.series {
            *s = series(s);
        }
        for driver in &mut self.drivers.list {
            driver.licence.series = series(&driver.licence.series);
        }
    }

    /// Checks every business rule; returns all violations at once.
    pub fn validate(&self, today: NaiveDate) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let start = self.policy.effective_start(today);
        self.validate_policy(today, &mut errors);
        self.validate_vehicle(today, &mut errors);
        self.validate_owner(today, &mut errors);
        self.validate_drivers(today, start, &mut errors);
        self.validate_contact_and_consent(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn validate_policy(&self, today: NaiveDate, errors: &mut Vec<FieldError>) {
        if let Some(start) = self.policy.start_date {
            if start <= today {
                // A policy bought today starts tomorrow at the earliest.
                errors.push(FieldError::new(
                    "policy.start_date",
                    Violation::StartFromTomorrow,
                ));
            } else if (start - today).num_days() > MAX_START_DAYS_AHEAD {
                errors.push(FieldError::new(
                    "policy.start_date",
                    Violation::TooFarAhead {
                        days: MAX_START_DAYS_AHEAD,
                    },
                ));
            }
        }
        if !(3..=12).contains(&self.policy.usage_period_months) {
            errors.push(FieldError::new(
                "policy.usage_period_months",
                Violation::UsagePeriod,
            ));
        }
    }

    fn validate_vehicle(&self, today: NaiveDate, errors: &mut Vec<FieldError>) {
        let v = &self.vehicle;
        non_blank(&v.make, "vehicle.make", 64, errors);
        non_blank(&v.model, "vehicle.model", 64, errors);
        if !(1900..=today.year()).contains(&i32::from(v.year)) {
            errors.push(FieldError::new("vehicle.year", Violation::Year));
        }
        match v.engine_power_hp {
            None if v.category.is_car() => errors.push(FieldError::new(
                "vehicle.engine_power_hp",
                Violation::EnginePowerRequired,
            )),
            Some(hp) if hp == 0 || hp > 2000 => errors.push(FieldError::new(
                "vehicle.engine_power_hp",
                Violation::EnginePower,
            )),
            _ => {}
        }
        if v.vin.is_none() && v.body_number.is_none() && v.chassis_number.is_none() {
            errors.push(FieldError::new("vehicle.vin", Violation::VehicleIdRequired));
        }
        if let Some(vin) = &v.vin {
            if !VIN.is_match(vin) {
                errors.push(FieldError::new("vehicle.vin", Violation::Vin));
            }
        }
        for (value, path) in [
            (&v.body_number, "vehicle.body_number"),
            (&v.chassis_number, "vehicle.chassis_number"),
        ] {
            if let Some(value) = value {
                if !FRAME_NUMBER.is_match(value) {
                    errors.push(FieldError::new(path, Violation::BodyNumber));
                }
            }
        }
        if let Some(plate) = &v.plate {
            // A motorcycle's plate has four digits, then two letters.
            let (pattern, rule) = if v.category == Category::A {
                (&*MOTO_PLATE, Violation::MotoPlate)
            } else {
                (&*PLATE, Violation::Plate)
            };
            if !pattern.is_match(plate) {
                errors.push(FieldError::new("vehicle.plate", rule));
            }
        }
        let doc = &v.document;
        match doc.kind {
            DocumentKind::Epts => {
                if !DIGITS15.is_match(&doc.number) {
                    errors.push(FieldError::new(
                        "vehicle.document.number",
                        Violation::EptsNumber,
                    ));
                }
            }
            DocumentKind::Sts | DocumentKind::Pts => {
                match &doc.series {
                    Some(series) if DOC_SERIES.is_match(series) => {}
                    Some(_) => errors.push(FieldError::new(
                        "vehicle.document.series",
                        Violation::DocumentSeries,
                    )),
                    None => errors.push(FieldError::new(
                        "vehicle.document.series",
                        Violation::DocumentSeriesRequired,
                    )),
                }
                if !DIGITS6.is_match(&doc.number) {
                    errors.push(FieldError::new(
                        "vehicle.document.number",
                        Violation::SixDigits,
                    ));
                }
            }
        }
        if doc.issue_date > today {
            errors.push(FieldError::new(
                "vehicle.document.issue_date",
                Violation::NotInFuture,
            ));
        }
    }

    fn validate_owner(&self, today: NaiveDate, errors: &mut Vec<FieldError>) {
        let o = &self.owner;
        full_name(&o.full_name, "owner.full_name", errors);
        let age = years_between(o.birth_date, today);
        if !(16..=120).contains(&age) {
            errors.push(FieldError::new("owner.birth_date", Violation::OwnerAge));
        }
        if !DIGITS4.is_match(&o.passport.series) {
            errors.push(FieldError::new(
                "owner.passport.series",
                Violation::PassportSeries,
            ));
        }
        if !DIGITS6.is_match(&o.passport.number) {
            errors.push(FieldError::new(
                "owner.passport.number",
                Violation::SixDigits,
            ));
        }
        if o.passport.issue_date > today || o.passport.issue_date < o.birth_date {
            errors.push(FieldError::new(
                "owner.passport.issue_date",
                Violation::PassportIssueDate,
            ));
        }
        if directive::kt_for_region(&o.address.region_code).is_none() {
            errors.push(FieldError::new(
                "owner.address.region_code",
                Violation::UnknownRegion,
            ));
        }
        non_blank(&o.address.city, "owner.address.city", 128, errors);
        non_blank(&o.address.street, "owner.address.street", 128, errors);
        non_blank(&o.address.house, "owner.address.house", 16, errors);
        if let Some(apartment) = &o.address.apartment {
            non_blank(apartment, "owner.address.apartment", 16, errors);
        }
    }

    fn validate_drivers(&self, today: NaiveDate, start: NaiveDate, errors: &mut Vec<FieldError>) {
        let d = &self.drivers;
        if !d.unlimited && d.list.is_empty() {
            errors.push(FieldError::new("drivers.list", Violation::DriversRequired));
        }
        if d.list.len() > 10 {
            errors.push(FieldError::new("drivers.list", Violation::TooManyDrivers));
        }
        let min_age = self.vehicle.category.minimum_driver_age();
        for (i, driver) in d.list.iter().enumerate() {
            let at = |field: &str| format!("drivers.list[{i}].{field}");
            full_name(&driver.full_name, &at("full_name"), errors);
            let age = years_between(driver.birth_date, start);
            if age < min_age || age > 120 {
                errors.push(FieldError::new(
                    at("birth_date"),
                    Violation::DriverTooYoung { years: min_age },
                ));
            }
            if driver.experience_start > today {
                errors.push(FieldError::new(
                    at("experience_start"),
                    Violation::NotInFuture,
                ));
            } else if years_between(driver.birth_date, driver.experience_start) < 16 {
                errors.push(FieldError::new(
                    at("experience_start"),
                    Violation::ExperienceBefore16,
                ));
            }
            if !DOC_SERIES.is_match(&driver.licence.series) {
                errors.push(FieldError::new(
                    at("licence.series"),
                    Violation::DocumentSeries,
                ));
            }
            if !DIGITS6.is_match(&driver.licence.number) {
                errors.push(FieldError::new(at("licence.number"), Violation::SixDigits));
            }
        }
    }

    fn validate_contact_and_consent(&self, errors: &mut Vec<FieldError>) {
        if !PHONE.is_match(&self.contact.phone) {
            errors.push(FieldError::new("contact.phone", Violation::Phone));
        }
        if !EMAIL.is_match(&self.contact.email) {
            errors.push(FieldError::new("contact.email", Violation::Email));
        }
        if !self.consent.personal_data {
            errors.push(FieldError::new(
                "consent.personal_data",
                Violation::ConsentProcessing,
            ));
        } else if self.consent.personal_data_text != PROCESSING_TEXT_VERSION {
            errors.push(FieldError::new(
                "consent.personal_data_text",
                Violation::ConsentText {
                    version: PROCESSING_TEXT_VERSION,
                },
            ));
        }
        if !self.consent.transfer_to_insurers {
            errors.push(FieldError::new(
                "consent.transfer_to_insurers",
                Violation::ConsentTransfer,
            ));
        } else if self.consent.transfer_text != TRANSFER_TEXT_VERSION {
            errors.push(FieldError::new(
                "consent.transfer_text",
                Violation::ConsentText {
                    version: TRANSFER_TEXT_VERSION,
                },
            ));
        }
    }
}

fn non_blank(value: &str, path: &str, max_chars: usize, errors: &mut Vec<FieldError>) {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        errors.push(FieldError::new(path, Violation::Empty));
    } else if trimmed.chars().count() > max_chars {
        errors.push(FieldError::new(
            path,
            Violation::TooLong { chars: max_chars },
        ));
    }
}

fn full_name(value: &str, path: &str, errors: &mut Vec<FieldError>) {
    let words = value.split_whitespace().count();
    if words < 2 || value.chars().count() > 128 {
        errors.push(FieldError::new(path, Violation::FullName));
    }
}

/// A valid sample request (`data/request.json`, also `docs/examples/request.json`), for
/// tests, demos and documentation.
pub fn sample() -> QuoteRequest {
    let json = include_str!("../data/request.json");
    decode(json.as_bytes()).expect("the sample request decodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
    }

    fn paths(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn the_sample_is_valid() {
        sample().validate(today()).unwrap();
    }

    #[test]
    fn reports_every_violation_at_once() {
        let mut r = sample();
        r.vehicle.vin = Some("XTAGFL110MY12345O".into());
        r.vehicle.plate = Some("Q123QQ77".into());
        r.policy.usage_period_months = 2;
        r.contact.phone = "89161234567".into();
        r.consent.personal_data = false;
        let errors = r.validate(today()).unwrap_err();
        assert_eq!(
            paths(&errors),
            [
                "policy.usage_period_months",
                "vehicle.vin",
                "vehicle.plate",
                "contact.phone",
                "consent.personal_data"
            ]
        );
    }

    #[test]
    fn debug_never_prints_personal_data() {
        let r = sample();
        let printed = format!(
            "{r:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            r.owner,
            r.owner.passport,
            r.owner.address,
            r.drivers,
            r.drivers.list[0],
            r.drivers.list[0].licence,
            r.contact,
            r.vehicle,
            r.vehicle.document,
            r.consent
        );
        let mut personal = vec![
            r.owner.full_name.clone(),
            r.owner.passport.number.clone(),
            r.owner.passport.series.clone(),
            r.owner.birth_date.to_string(),
            r.owner.address.street.clone(),
            r.contact.phone.clone(),
            r.contact.email.clone(),
            r.drivers.list[0].licence.number.clone(),
            r.vehicle.document.number.clone(),
        ];
        personal.extend(r.vehicle.vin.clone());
        personal.extend(r.vehicle.plate.clone());
        for value in personal {
            assert!(!printed.contains(&value), "{value} in {printed}");
        }
        assert!(printed.contains("Owner { <personal data> }"), "{printed}");
        assert!(
            printed.contains("Vesta"),
            "the non-personal fields stay: {printed}"
        );
    }

    #[test]
    fn messages_never_echo_values() {
        let mut r = sample();
        r.vehicle.vin = Some("SECRETVIN".into());
        r.owner.passport.number = "SECRET".into();
        let errors = r.validate(today()).unwrap_err();
        for e in errors {
            assert!(!e.message.contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn start_date_window() {
        let mut r = sample();
        r.policy.start_date = Some(today() - chrono::Duration::days(1));
        assert_eq!(
            paths(&r.validate(today()).unwrap_err()),
            ["policy.start_date"]
        );
        r.policy.start_date = Some(today() + chrono::Duration::days(61));
        assert_eq!(
            paths(&r.validate(today()).unwrap_err()),
            ["policy.start_date"]
        );
        r.policy.start_date = Some(today() + chrono::Duration::days(60));
        r.validate(today()).unwrap();
    }

    #[test]
    fn driver_age_and_experience() {
        let mut r = sample();
        r.drivers.list[0].birth_date = NaiveDate::from_ymd_opt(2010, 1, 1).unwrap();
        r.drivers.list[0].experience_start = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        assert_eq!(
            paths(&r.validate(today()).unwrap_err()),
            [
                "drivers.list[0].birth_date",
                "drivers.list[0].experience_start"
            ]
        );
    }

    #[test]
    fn latin_and_cyrillic_plates() {
        for plate in ["А123ВС77", "A123BC777", "Х001ХХ199"] {
            let mut r = sample();
            r.vehicle.plate = Some(plate.into());
            r.validate(today()).unwrap();
        }
    }

    #[test]
    fn decode_names_the_field_without_its_value() {
        let json =
            include_str!("../data/request.json").replace("\"year\": 2021", "\"year\": \"SECRET\"");
        match decode(json.as_bytes()) {
            Err(DecodeError::Shape(e)) => {
                assert_eq!(e.path, "vehicle.year");
                assert!(!e.message.contains("SECRET"));
            }
            other => panic!("{other:?}"),
        }
        let json = include_str!("../data/request.json").replace("\"make\": \"Lada\",", "");
        match decode(json.as_bytes()) {
            Err(DecodeError::Shape(e)) => {
                assert_eq!(e, FieldError::new("vehicle.make", Violation::Required))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decode(b"{\"policy\": "), Err(DecodeError::Syntax));
    }

    #[test]
    fn typed_vins_and_plates_become_canonical() {
        assert_eq!(normalize_vin(" xtagfl110my 123456 "), "XTAGFL110MY123456");
        // Cyrillic look-alikes typed into a VIN become Latin.
        assert_eq!(normalize_vin("ХТАGFL110МУ123456"), "XTAGFL110MY123456");
        assert_eq!(normalize_plate("a123bc 777"), "А123ВС777");
        assert_eq!(normalize_plate("А123ВС777"), "А123ВС777");
        let mut typed = sample();
        typed.vehicle.vin = Some("xtagfl110my123456".into());
        typed.vehicle.plate = Some("a 123 bc 777".into());
        typed.vehicle.document.series = Some("99 аа".into());
        assert!(typed.validate(today()).is_err());
        typed.normalize();
        assert_eq!(typed.validate(today()), Ok(()));
        assert_eq!(typed.vehicle.vin, sample().vehicle.vin);
        assert_eq!(typed.vehicle.plate, sample().vehicle.plate);
        let once = typed.clone();
        typed.normalize();
        assert_eq!(typed, once, "idempotent");
    }

    proptest::proptest! {
        #[test]
        fn normalizing_is_idempotent(text in "[ a-zA-Zа-яА-Я0-9]{0,24}") {
            let vin = normalize_vin(&text);
            proptest::prop_assert_eq!(normalize_vin(&vin), vin.clone());
            let plate = normalize_plate(&text);
            proptest::prop_assert_eq!(normalize_plate(&plate), plate.clone());
            proptest::prop_assert!(!vin.contains(' ') && !plate.contains(' '));
        }
    }

    #[test]
    fn a_policy_starts_tomorrow_at_the_earliest() {
        let mut request = sample();
        request.policy.start_date = Some(today());
        let errors = request.validate(today()).unwrap_err();
        assert_eq!(errors[0].path, "policy.start_date");
        assert_eq!(errors[0].code, "start_from_tomorrow");
        request.policy.start_date = Some(today() + chrono::Duration::days(1));
        assert_eq!(request.validate(today()), Ok(()));
        request.policy.start_date = None;
        assert_eq!(
            request.policy.effective_start(today()),
            today() + chrono::Duration::days(1)
        );
    }

    #[test]
    fn minimum_ages_and_plates_follow_the_category() {
        let start = today() + chrono::Duration::days(1);
        let mut bus = sample();
        bus.vehicle.category = Category::D;
        bus.policy.start_date = Some(start);
        // A 20-year-old may drive a car, not a bus.
        bus.drivers.list[0].birth_date = start - chrono::Duration::days(365 * 20 + 10);
        bus.drivers.list[0].experience_start = start - chrono::Duration::days(365);
        let errors = bus.validate(today()).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.code == "driver_too_young" && e.message_ru.contains("21")),
            "{errors:?}"
        );
        let mut car = bus.clone();
        car.vehicle.category = Category::B;
        assert_eq!(car.validate(today()), Ok(()));

        let mut moto = car.clone();
        moto.vehicle.category = Category::A;
        moto.vehicle.engine_power_hp = None;
        let errors = moto.validate(today()).unwrap_err();
        assert_eq!(errors[0].code, "moto_plate", "{errors:?}");
        moto.vehicle.plate = Some(normalize_plate("1234 ab 77"));
        assert_eq!(moto.validate(today()), Ok(()));
        car.vehicle.plate = moto.vehicle.plate.clone();
        assert_eq!(car.validate(today()).unwrap_err()[0].code, "plate");
    }
}
