use gpt1::kernels::attention::{self, Dims};
use gpt1::kernels::dropout::Dropout;
use gpt1::kernels::matmul::Gemm;
fn main() {
    let s = Dims { b: 4, t: 512, h: 12, dh: 64 };
    let (d, tt) = (s.d(), s.b * s.h * s.t * s.t);
    let qkv: Vec<f32> = (0..s.b * s.t * 3 * d).map(|i| ((i % 17) as f32 - 8.0) * 0.05).collect();
    let dy: Vec<f32> = (0..s.b * s.t * d).map(|i| ((i % 11) as f32 - 5.0) * 0.01).collect();
    let (mut y, mut att, mut sc) = (vec![0.0; s.b * s.t * d], vec![0.0; tt], vec![0.0; tt]);
    let mut dqkv = vec![0.0; qkv.len()];
    let g = Gemm::Bf16(gpt1::kernels::bf16::best_version());
    let drop = Dropout::new(0.1, 1);
    for _ in 0..20 {
        attention::forward(g, &mut y, &mut att, &mut sc, &qkv, s, drop);
        attention::backward(g, &mut dqkv, &mut sc, &dy, &qkv, &att, s, drop);
    }
}
