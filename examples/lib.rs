//! Examples of embedding the OSAGO crates (`examples/*.rs`, run by the test
//! command), and the README's code, compiled and run as a doctest so it
//! cannot drift from the API.

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
