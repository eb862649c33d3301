//! Learning-rate schedules.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Linear warm-up, then cosine to 0 at the last step (the paper's pre-training).
    WarmupCosine,
    /// Linear warm-up, then linear to 0 at the last step (the paper's fine-tuning).
    WarmupLinear,
    Constant,
}

impl Schedule {
    /// The learning rate of update `step` (0-based) of `total`.
    pub fn lr(self, base: f32, step: u64, warmup: u64, total: u64) -> f32 {
        if self == Schedule::Constant {
            return base;
        }
        if step < warmup {
            return base * (step + 1) as f32 / warmup as f32;
        }
        let span = total.saturating_sub(warmup).max(1) as f64;
        let x = ((step - warmup) as f64 / span).min(1.0);
        let f = match self {
            Schedule::WarmupCosine => 0.5 * (1.0 + (std::f64::consts::PI * x).cos()),
            Schedule::WarmupLinear => 1.0 - x,
            Schedule::Constant => 1.0,
        };
        (base as f64 * f) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let s = Schedule::WarmupCosine;
        assert_eq!(s.lr(1.0, 0, 10, 110), 0.1);
        assert_eq!(s.lr(1.0, 9, 10, 110), 1.0);
        assert_eq!(s.lr(1.0, 10, 10, 110), 1.0);
        assert!((s.lr(1.0, 60, 10, 110) - 0.5).abs() < 1e-6);
        assert!(s.lr(1.0, 110, 10, 110).abs() < 1e-6);
        assert!((Schedule::WarmupLinear.lr(2.0, 60, 10, 110) - 1.0).abs() < 1e-6);
        assert_eq!(Schedule::Constant.lr(3.0, 5, 10, 110), 3.0);
    }
}
