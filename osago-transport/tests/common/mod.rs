//! What several test files of this crate share.

/// Histories of up to 24 events (3 insurers, versions 1..=3, errors or
/// declines) and up to 6 cuts into batches.
pub fn histories() -> impl proptest::strategy::Strategy<
    Value = (
        Vec<osago_transport::conformance::read_model::HistoryStep>,
        Vec<usize>,
    ),
> {
    use proptest::prelude::*;
    (
        proptest::collection::vec((0u8..3, 1u32..=3, any::<bool>()), 1..24),
        proptest::collection::vec(0usize..24, 0..6),
    )
}
