//! Times the evaluation forward pass (no dropout, no backward) of a preset at B × T, for
//! profiling: `cargo run --release --example eval_probe -- gpt1 8 128 20`.
use gpt1::model::{Activations, Config, Gpt};
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let name = a.get(1).map_or("small", String::as_str);
    let b: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(8);
    let t: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(128);
    let n: usize = a.get(4).and_then(|s| s.parse().ok()).unwrap_or(20);
    let c = Config::from_name_or_file(name).expect("preset");
    let model = Gpt::init(c.clone(), 1);
    let mut acts = Activations::new(&c, b, t, false);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 7919 % c.vocab_size) as u32).collect();
    model.forward(&mut acts, &ids, None);
    let mut times = Vec::new();
    for _ in 0..n {
        let t0 = Instant::now();
        model.forward(&mut acts, &ids, None);
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let med = times[n / 2];
    println!("{name} {b}x{t}: median {:.1} ms, {:.1} examples/s", med * 1e3, b as f64 / med);
}
