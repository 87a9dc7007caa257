//! The real default model (SmolLM2-135M-Instruct Q4_1 GGUF, fetched through `weir serve`'s code
//! path): weir's paged model against candle-transformers' stock `quantized_llama` on the same file.

mod common;

use common::{compare, load, quantization_errors};
use weir::models::WeightFormat;

/// Both sides quantize activations to Q8 before each matmul (weir rounds half to even and keeps
/// Q4_1's min term exact, candle's stock `quantized_llama` rounds half away and uses Q8_1 sums);
/// a flipped rounding grows over 30 layers: logits agree to ~1 (of magnitudes ~20). The exact
/// check is `smollm2_f32.rs`; the accuracy check is the test below.
#[test]
fn quantized_logits_match_candle_quantized_llama() {
    compare(WeightFormat::Quantized, 2.0);
}

/// Against the dequantized f32 model (weir's dense path, equal to candle's f32 reference to
/// 1e-3), weir's integer kernels are no less accurate than candle's stock quantized model.
#[test]
fn quantized_kernels_are_as_accurate_as_candles() {
    let (weir, candle) = quantization_errors();
    eprintln!("worst logit error vs f32: weir {weir}, candle {candle}");
    assert!(weir <= candle * 1.1, "weir {weir} vs candle {candle}");
}

#[test]
fn tokenizer_round_trips_and_knows_the_chat_tokens() {
    let (_, codec) = load(WeightFormat::Quantized);
    let text = "Hello, world! 12345 ünïcödé 日本語";
    let ids = codec.encode(text, false).unwrap();
    assert_eq!(codec.decode(&ids, false).unwrap(), text);
    let im = codec.encode("<|im_start|>user", false).unwrap();
    assert_eq!(
        im[0],
        codec.token_to_id("<|im_start|>").unwrap(),
        "special tokens are atomic"
    );
    // SmolLM2 splits digits one by one
    assert_eq!(codec.encode("12345", false).unwrap().len(), 5);
    assert!(codec
        .eos_token_ids()
        .contains(&codec.token_to_id("<|im_end|>").unwrap()));
}
