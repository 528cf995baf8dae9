//! What a request's field can get wrong: a closed list of rules, each with
//! a stable code, an English message (for developers and logs) and a
//! Russian one (for the buyer, next to the field). No message ever holds
//! the submitted value.

use std::fmt;

/// One rule a field broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A policy start date before tomorrow.
    StartFromTomorrow,
    /// A start date too far ahead.
    TooFarAhead {
        /// The most days ahead.
        days: i64,
    },
    /// Months of use outside 3..=12.
    UsagePeriod,
    /// A manufacturing year outside 1900..=now.
    Year,
    /// A car without engine power.
    EnginePowerRequired,
    /// Engine power outside 1..=2000.
    EnginePower,
    /// No VIN, body or chassis number.
    VehicleIdRequired,
    /// A malformed VIN.
    Vin,
    /// A malformed body or chassis number.
    BodyNumber,
    /// A malformed plate.
    Plate,
    /// A malformed motorcycle plate.
    MotoPlate,
    /// An electronic vehicle passport number that is not 15 digits.
    EptsNumber,
    /// A document or licence series of the wrong form.
    DocumentSeries,
    /// A missing registration certificate or passport series.
    DocumentSeriesRequired,
    /// A number that is not 6 digits.
    SixDigits,
    /// A date in the future.
    NotInFuture,
    /// An owner younger than 16 or older than 120.
    OwnerAge,
    /// A passport series that is not 4 digits.
    PassportSeries,
    /// A passport issued before birth or after today.
    PassportIssueDate,
    /// A region code the tariff does not know.
    UnknownRegion,
    /// No driver, with drivers limited.
    DriversRequired,
    /// More than 10 drivers.
    TooManyDrivers,
    /// A driver under the category's minimum age.
    DriverTooYoung {
        /// The minimum age.
        years: i32,
    },
    /// Experience starting before 16.
    ExperienceBefore16,
    /// A phone that is not 7 and 10 digits.
    Phone,
    /// Not an e-mail address.
    Email,
    /// No consent to processing.
    ConsentProcessing,
    /// No consent to the transfer to insurers.
    ConsentTransfer,
    /// A consent given to an outdated text.
    ConsentText {
        /// The current text's version.
        version: &'static str,
    },
    /// An empty field.
    Empty,
    /// A field over its length.
    TooLong {
        /// The most characters.
        chars: usize,
    },
    /// Not a full name.
    FullName,
    /// A field the API does not know.
    UnknownField,
    /// A missing field.
    Required,
    /// A value outside the allowed set.
    NotAllowed,
    /// A value of the wrong type or format.
    InvalidFormat,
}

impl Violation {
    /// The stable, machine-readable code (snake_case).
    pub fn code(self) -> &'static str {
        match self {
            Violation::StartFromTomorrow => "start_from_tomorrow",
            Violation::TooFarAhead { .. } => "too_far_ahead",
            Violation::UsagePeriod => "usage_period",
            Violation::Year => "year",
            Violation::EnginePowerRequired => "engine_power_required",
            Violation::EnginePower => "engine_power",
            Violation::VehicleIdRequired => "vehicle_id_required",
            Violation::Vin => "vin",
            Violation::BodyNumber => "body_number",
            Violation::Plate => "plate",
            Violation::MotoPlate => "moto_plate",
            Violation::EptsNumber => "epts_number",
            Violation::DocumentSeries => "document_series",
            Violation::DocumentSeriesRequired => "document_series_required",
            Violation::SixDigits => "six_digits",
            Violation::NotInFuture => "not_in_future",
            Violation::OwnerAge => "owner_age",
            Violation::PassportSeries => "passport_series",
            Violation::PassportIssueDate => "passport_issue_date",
            Violation::UnknownRegion => "unknown_region",
            Violation::DriversRequired => "drivers_required",
            Violation::TooManyDrivers => "too_many_drivers",
            Violation::DriverTooYoung { .. } => "driver_too_young",
            Violation::ExperienceBefore16 => "experience_before_16",
            Violation::Phone => "phone",
            Violation::Email => "email",
            Violation::ConsentProcessing => "consent_processing",
            Violation::ConsentTransfer => "consent_transfer",
            Violation::ConsentText { .. } => "consent_text",
            Violation::Empty => "empty",
            Violation::TooLong { .. } => "too_long",
            Violation::FullName => "full_name",
            Violation::UnknownField => "unknown_field",
            Violation::Required => "required",
            Violation::NotAllowed => "not_allowed",
            Violation::InvalidFormat => "invalid_format",
        }
    }

    /// The English message (lower case, without the value).
    pub fn english(self) -> String {
        match self {
            Violation::StartFromTomorrow => "must be tomorrow or later".into(),
            Violation::TooFarAhead { days } => format!("must be at most {days} days ahead"),
            Violation::UsagePeriod => "must be between 3 and 12".into(),
            Violation::Year => "must be between 1900 and the current year".into(),
            Violation::EnginePowerRequired => "is required for category B and BE".into(),
            Violation::EnginePower => "must be between 1 and 2000".into(),
            Violation::VehicleIdRequired => {
                "one of vin, body_number or chassis_number is required".into()
            }
            Violation::Vin => "must be 17 characters of A-Z and 0-9 without I, O and Q".into(),
            Violation::BodyNumber => "must be 5-20 characters of A-Z, 0-9 and '-'".into(),
            Violation::Plate => "must be a Russian plate such as А123ВС77 or А123ВС777".into(),
            Violation::MotoPlate => "must be a motorcycle plate such as 1234АВ77".into(),
            Violation::EptsNumber => "must be 15 digits for an electronic vehicle passport".into(),
            Violation::DocumentSeries => "must be two digits and two letters or digits".into(),
            Violation::DocumentSeriesRequired => "is required for sts and pts".into(),
            Violation::SixDigits => "must be 6 digits".into(),
            Violation::NotInFuture => "must not be in the future".into(),
            Violation::OwnerAge => "owner must be between 16 and 120 years old".into(),
            Violation::PassportSeries => "must be 4 digits".into(),
            Violation::PassportIssueDate => "must be between the birth date and today".into(),
            Violation::UnknownRegion => "is not a supported region code".into(),
            Violation::DriversRequired => {
                "at least one driver is required unless drivers are unlimited".into()
            }
            Violation::TooManyDrivers => "at most 10 drivers".into(),
            Violation::DriverTooYoung { years } => {
                format!("driver must be at least {years} years old for this category")
            }
            Violation::ExperienceBefore16 => {
                "driving experience cannot start before the age of 16".into()
            }
            Violation::Phone => "must be 7 followed by 10 digits".into(),
            Violation::Email => "must be an e-mail address".into(),
            Violation::ConsentProcessing => {
                "consent to personal data processing is required".into()
            }
            Violation::ConsentTransfer => "consent to the transfer to insurers is required".into(),
            Violation::ConsentText { version } => {
                format!("must name the current consent text, {version}")
            }
            Violation::Empty => "must not be empty".into(),
            Violation::TooLong { chars } => format!("must be at most {chars} characters"),
            Violation::FullName => {
                "must be a full name of at least two words and at most 128 characters".into()
            }
            Violation::UnknownField => "is not a known field".into(),
            Violation::Required => "is required".into(),
            Violation::NotAllowed => "has a value that is not allowed".into(),
            Violation::InvalidFormat => "has an invalid type or format".into(),
        }
    }

    /// The Russian message, as the buyer reads it next to the field.
    pub fn russian(self) -> String {
        match self {
            Violation::StartFromTomorrow => {
                "Полис может начать действовать не раньше завтрашнего дня".into()
            }
            Violation::TooFarAhead { days } => {
                format!("Дата начала — не позже чем через {days} дней")
            }
            Violation::UsagePeriod => "Период использования — от 3 до 12 месяцев".into(),
            Violation::Year => "Год выпуска — от 1900 до текущего".into(),
            Violation::EnginePowerRequired => {
                "Укажите мощность двигателя: для категорий B и BE она обязательна".into()
            }
            Violation::EnginePower => "Мощность — от 1 до 2000 л. с.".into(),
            Violation::VehicleIdRequired => "Укажите VIN, номер кузова или номер шасси".into(),
            Violation::Vin => "VIN — 17 символов: цифры и латинские буквы, кроме I, O и Q".into(),
            Violation::BodyNumber => "От 5 до 20 символов: цифры, латинские буквы и дефис".into(),
            Violation::Plate => "Госномер в формате А123ВС77 или А123ВС777".into(),
            Violation::MotoPlate => "Номер мотоцикла в формате 1234АВ77".into(),
            Violation::EptsNumber => "Номер электронного ПТС — 15 цифр".into(),
            Violation::DocumentSeries => "Серия — две цифры и две буквы или цифры".into(),
            Violation::DocumentSeriesRequired => "Укажите серию СТС или ПТС".into(),
            Violation::SixDigits => "Номер — 6 цифр".into(),
            Violation::NotInFuture => "Дата не может быть в будущем".into(),
            Violation::OwnerAge => "Собственнику должно быть от 16 до 120 лет".into(),
            Violation::PassportSeries => "Серия паспорта — 4 цифры".into(),
            Violation::PassportIssueDate => {
                "Дата выдачи — между датой рождения и сегодняшним днём".into()
            }
            Violation::UnknownRegion => "Этот регион пока не поддерживается".into(),
            Violation::DriversRequired => {
                "Укажите хотя бы одного водителя или выберите «без ограничений»".into()
            }
            Violation::TooManyDrivers => "Не больше 10 водителей".into(),
            Violation::DriverTooYoung { years } => {
                format!("Водителю этой категории должно быть не меньше {years} лет")
            }
            Violation::ExperienceBefore16 => "Стаж не может начинаться раньше 16 лет".into(),
            Violation::Phone => "Телефон — 7 и ещё 10 цифр".into(),
            Violation::Email => "Укажите адрес электронной почты".into(),
            Violation::ConsentProcessing => {
                "Нужно согласие на обработку персональных данных".into()
            }
            Violation::ConsentTransfer => "Нужно согласие на передачу данных страховщикам".into(),
            Violation::ConsentText { .. } => {
                "Текст согласия обновился: обновите страницу и дайте согласие заново".into()
            }
            Violation::Empty => "Заполните поле".into(),
            Violation::TooLong { chars } => format!("Не длиннее {chars} символов"),
            Violation::FullName => {
                "Укажите фамилию и имя (и отчество, если есть), не длиннее 128 символов".into()
            }
            Violation::UnknownField => "Неизвестное поле".into(),
            Violation::Required => "Обязательное поле".into(),
            Violation::NotAllowed => "Недопустимое значение".into(),
            Violation::InvalidFormat => "Неверный формат".into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.english())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rule (the match below fails to compile when one is added and
    /// not listed).
    fn all() -> Vec<Violation> {
        let list = vec![
            Violation::StartFromTomorrow,
            Violation::TooFarAhead { days: 60 },
            Violation::UsagePeriod,
            Violation::Year,
            Violation::EnginePowerRequired,
            Violation::EnginePower,
            Violation::VehicleIdRequired,
            Violation::Vin,
            Violation::BodyNumber,
            Violation::Plate,
            Violation::MotoPlate,
            Violation::EptsNumber,
            Violation::DocumentSeries,
            Violation::DocumentSeriesRequired,
            Violation::SixDigits,
            Violation::NotInFuture,
            Violation::OwnerAge,
            Violation::PassportSeries,
            Violation::PassportIssueDate,
            Violation::UnknownRegion,
            Violation::DriversRequired,
            Violation::TooManyDrivers,
            Violation::DriverTooYoung { years: 18 },
            Violation::ExperienceBefore16,
            Violation::Phone,
            Violation::Email,
            Violation::ConsentProcessing,
            Violation::ConsentTransfer,
            Violation::ConsentText { version: "v1" },
            Violation::Empty,
            Violation::TooLong { chars: 64 },
            Violation::FullName,
            Violation::UnknownField,
            Violation::Required,
            Violation::NotAllowed,
            Violation::InvalidFormat,
        ];
        for v in &list {
            match v {
                Violation::StartFromTomorrow
                | Violation::TooFarAhead { .. }
                | Violation::UsagePeriod
                | Violation::Year
                | Violation::EnginePowerRequired
                | Violation::EnginePower
                | Violation::VehicleIdRequired
                | Violation::Vin
                | Violation::BodyNumber
                | Violation::Plate
                | Violation::MotoPlate
                | Violation::EptsNumber
                | Violation::DocumentSeries
                | Violation::DocumentSeriesRequired
                | Violation::SixDigits
                | Violation::NotInFuture
                | Violation::OwnerAge
                | Violation::PassportSeries
                | Violation::PassportIssueDate
                | Violation::UnknownRegion
                | Violation::DriversRequired
                | Violation::TooManyDrivers
                | Violation::DriverTooYoung { .. }
                | Violation::ExperienceBefore16
                | Violation::Phone
                | Violation::Email
                | Violation::ConsentProcessing
                | Violation::ConsentTransfer
                | Violation::ConsentText { .. }
                | Violation::Empty
                | Violation::TooLong { .. }
                | Violation::FullName
                | Violation::UnknownField
                | Violation::Required
                | Violation::NotAllowed
                | Violation::InvalidFormat => {}
            }
        }
        list
    }

    #[test]
    fn every_rule_has_a_unique_code_and_a_russian_message() {
        let rules = all();
        let codes: std::collections::BTreeSet<&str> = rules.iter().map(|v| v.code()).collect();
        assert_eq!(codes.len(), rules.len(), "a code is used twice");
        for rule in rules {
            let ru = rule.russian();
            assert!(
                ru.chars()
                    .any(|c| ('а'..='я').contains(&c.to_lowercase().next().unwrap_or(c))),
                "{rule:?}: {ru}"
            );
            assert!(
                ru.chars().next().is_some_and(char::is_uppercase),
                "{rule:?}: {ru}"
            );
            assert!(!rule.english().is_empty());
            assert!(rule
                .code()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()));
        }
        assert_eq!(
            Violation::DriverTooYoung { years: 18 }.russian(),
            "Водителю этой категории должно быть не меньше 18 лет"
        );
    }
}
