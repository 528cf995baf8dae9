//! Tariff throughput: how many premiums one core computes per second.
//! `cargo bench -p osago-benches --bench tariff` (prints ns per premium).

use std::hint::black_box;
use std::time::Instant;

use osago_core::request::sample;
use osago_core::tariff;
use osago_core::Kopecks;

fn main() {
    let request = sample();
    let start = chrono_free_start(&request);
    let iterations = 200_000u32;
    let begin = Instant::now();
    let mut total = 0i64;
    for i in 0..iterations {
        let tb = Kopecks::from_rub(5_500 + i64::from(i % 3_000));
        total += tariff::premium(black_box(&request), tb, start)
            .expect("valid sample")
            .premium_kopecks
            .get();
    }
    let elapsed = begin.elapsed();
    black_box(total);
    println!(
        "tariff::premium: {:.0} ns per premium ({iterations} iterations)",
        elapsed.as_nanos() as f64 / f64::from(iterations)
    );
}

fn chrono_free_start(request: &osago_core::QuoteRequest) -> chrono::NaiveDate {
    request
        .policy
        .effective_start(osago_core::Clock::today(&osago_core::SystemClock))
}
