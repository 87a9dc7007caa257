//! Exactness on the real model: with every weight dequantized to f32 on both sides
//! (`CANDLE_DEQUANTIZE_ALL=1` makes candle's stock `quantized_llama` do so), weir's paged model
//! gives the reference's logits to 1e-3 at the prompt and 20 decode positions. Its own test binary
//! because the variable is read once per thread by candle.

mod common;

#[test]
fn dense_logits_equal_f32_reference() {
    // SAFETY: set before any thread of this binary reads the environment.
    unsafe { std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1") };
    common::compare(weir::models::WeightFormat::Dense, 1e-3);
}
