//! The regulated coefficient tables (Bank of Russia instruction 6007-U as
//! amended by 6209-U and 7204-U). One table per coefficient; every value is
//! in hundredths (117 means 1.17). Values marked *unverified* in the domain
//! notes live here and only here.

/// TB corridor for category B/BE, individuals, in whole roubles (from 2025-12-09).
pub const TB_CORRIDOR_RUB: (i64, i64) = (1_399, 8_665);

/// TB corridor for a car used as a taxi, in whole roubles (*unverified*).
pub const TB_CORRIDOR_TAXI_RUB: (i64, i64) = (1_749, 10_831);
/// TB corridor for motorcycles and mopeds (A), in whole roubles (*unverified*).
pub const TB_CORRIDOR_MOTORCYCLE_RUB: (i64, i64) = (737, 1_816);
/// TB corridor for trucks (C, CE), in whole roubles (*unverified*; the
/// directive splits them at 16 t, which the request does not carry).
pub const TB_CORRIDOR_TRUCK_RUB: (i64, i64) = (2_386, 5_980);
/// TB corridor for buses (D, DE), in whole roubles (*unverified*; the
/// directive splits them by seats and regular routes, which the request
/// does not carry).
pub const TB_CORRIDOR_BUS_RUB: (i64, i64) = (1_909, 4_789);

/// KBM by class index: M, 0, 1, ..., 13 (2022 scale).
pub const KBM: [u16; 15] = [
    392, 294, 225, 176, 117, 100, 91, 83, 78, 74, 68, 63, 57, 52, 46,
];

/// Lower bounds of the KVS age bands: 16-21, 22-24, 25-29, 30-34, 35-39, 40-49, 50-59, 60+.
pub const KVS_AGE_FROM: [i32; 8] = [16, 22, 25, 30, 35, 40, 50, 60];

/// Lower bounds of the KVS experience bands: 0, 1, 2, 3-4, 5-6, 7-9, 10-14, >14.
pub const KVS_EXPERIENCE_FROM: [i32; 8] = [0, 1, 2, 3, 5, 7, 10, 15];

/// KVS by age band (rows) and experience band (columns); 0 marks a
/// combination that cannot occur (the nearest shorter experience applies).
pub const KVS: [[u16; 8]; 8] = [
    [227, 192, 184, 165, 162, 0, 0, 0],
    [188, 172, 171, 113, 110, 109, 0, 0],
    [172, 160, 154, 109, 108, 107, 102, 0],
    [156, 150, 148, 105, 104, 101, 97, 95],
    [154, 147, 146, 100, 97, 95, 94, 93],
    [150, 144, 143, 96, 95, 94, 93, 91],
    [146, 140, 139, 93, 92, 91, 90, 86],
    [143, 136, 135, 91, 90, 89, 88, 83],
];

/// KO: a named list of drivers.
pub const KO_NAMED: u16 = 100;
/// KO: unlimited drivers, individuals.
pub const KO_UNLIMITED: u16 = 232;

/// KM by engine power (hp) for B/BE: (upper bound inclusive, coefficient).
pub const KM: [(u16, u16); 6] = [
    (50, 60),
    (70, 100),
    (100, 110),
    (120, 120),
    (150, 140),
    (u16::MAX, 160),
];

/// KS by months of use, index 3..=12 (*unverified* mapping).
pub const KS: [(u8, u16); 10] = [
    (3, 50),
    (4, 60),
    (5, 65),
    (6, 70),
    (7, 80),
    (8, 90),
    (9, 95),
    (10, 100),
    (11, 100),
    (12, 100),
];

/// KN: gross violations.
pub const KN_VIOLATIONS: u16 = 150;

/// KPr: a trailer on a B/BE vehicle of an individual (*unverified*).
pub const KPR_TRAILER: u16 = 116;

/// Premium cap multiple of TB x KT (law 40-FZ art. 9), and with KN.
pub const CAP_MULTIPLE: u128 = 3;
/// The cap multiple when KN applies.
pub const CAP_MULTIPLE_WITH_KN: u128 = 5;

/// The territory table: `region_code,region,settlement,kt_hundredths,source`,
/// one settlement per line, `*` for the region's other settlements; the
/// file's header names its source and what is unverified.
pub const TERRITORIES_CSV: &str = include_str!("../../data/territories.csv");
