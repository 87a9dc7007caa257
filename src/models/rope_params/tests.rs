//! `RopeParams` from both config shapes, GGUF metadata, and their frequencies.
use super::*;
use serde_json::json;

fn parse(v: Value) -> Result<RopeParams, ConfigError> {
    RopeParams::from_hf(&v, None)
}

#[test]
fn longrope_divides_by_short_then_long_factors() {
    let p = parse(json!({"max_position_embeddings": 4096, "original_max_position_embeddings": 1024,
        "rope_scaling": {"type": "longrope", "short_factor": [1.0, 2.0], "long_factor": [4.0, 8.0]}}))
    .unwrap();
    let base = RopeParams {
        theta: 10_000.0,
        scaling: RopeScaling::None,
    }
    .inv_freq(4)
    .unwrap();
    assert_eq!(p.inv_freq(4).unwrap(), vec![base[0], base[1] / 2.0]);
    let (long, from) = p.long_inv_freq(4).unwrap().unwrap();
    assert_eq!((long, from), (vec![base[0] / 4.0, base[1] / 8.0], 1024));
    let want = (1.0 + 4f32.ln() / 1024f32.ln()).sqrt();
    assert!((p.attention_factor() - want).abs() < 1e-6);
    assert!(p.inv_freq(6).is_err(), "2 factors for 3 frequencies");
}

#[test]
fn reads_both_config_shapes_alike() {
    let new = parse(json!({"rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}}))
        .unwrap();
    let old = parse(json!({"rope_theta": 100000.0})).unwrap();
    assert_eq!(new, old);
    assert_eq!(new.theta, 100_000.0);
    assert_eq!(parse(json!({})).unwrap().theta, 10_000.0);
    let scaled_new = parse(
        json!({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}}),
    )
    .unwrap();
    let scaled_old =
        parse(json!({"rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0}}))
            .unwrap();
    assert_eq!(scaled_new, scaled_old);
    assert_eq!(scaled_new.scaling, RopeScaling::Linear { factor: 2.0 });
}

#[test]
fn unknown_rope_types_and_partial_rotation_are_errors_that_name_the_field() {
    let e =
        parse(json!({"rope_parameters": {"rope_type": "mrope", "rope_theta": 1e4}})).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported model: rope_parameters.rope_type \"mrope\"; weir implements default, linear, dynamic, llama3, yarn, longrope"
    );
    let e = parse(json!({"max_position_embeddings": 4096,
        "rope_scaling": {"type": "longrope", "short_factor": [1.0]}}))
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("rope_scaling.long_factor must be a list"),
        "{e}"
    );
    let e = parse(json!({"partial_rotary_factor": 0.5})).unwrap_err();
    assert!(e.to_string().contains("partial_rotary_factor 0.5"), "{e}");
    let e = parse(json!({"rope_scaling": {"rope_type": "linear"}})).unwrap_err();
    assert!(
        e.to_string().contains("rope_scaling.factor is required"),
        "{e}"
    );
}

#[test]
fn per_layer_type_parameters_pick_the_layers_own() {
    let v = json!({"rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}});
    let full = RopeParams::from_hf(&v, Some("full_attention")).unwrap();
    assert_eq!(
        (full.theta, full.scaling),
        (1e6, RopeScaling::Linear { factor: 8.0 })
    );
    assert_eq!(
        RopeParams::from_hf(&v, Some("sliding_attention"))
            .unwrap()
            .theta,
        1e4
    );
    assert!(
        parse(v).is_err(),
        "a model of one layer type must not guess"
    );
}

#[test]
fn scaled_frequencies_follow_their_formulas() {
    let plain = parse(json!({"rope_theta": 10000.0}))
        .unwrap()
        .inv_freq(8)
        .unwrap();
    let expect: Vec<f32> = [0.0f32, 2.0, 4.0, 6.0]
        .iter()
        .map(|i| 10000f32.powf(-i / 8.0))
        .collect();
    assert_eq!(plain, expect);
    let linear = parse(json!({"rope_scaling": {"type": "linear", "factor": 4.0}})).unwrap();
    assert_eq!(
        linear.inv_freq(8).unwrap(),
        expect.iter().map(|f| f / 4.0).collect::<Vec<_>>()
    );
    let dynamic = parse(json!({"rope_scaling": {"type": "dynamic", "factor": 4.0}})).unwrap();
    assert_eq!(dynamic.inv_freq(8).unwrap(), expect);
    // YaRN: the highest frequency extrapolates (unchanged), the lowest interpolates (/factor)
    let yarn = parse(json!({"max_position_embeddings": 4096, "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024}}))
    .unwrap();
    let y = yarn.inv_freq(64).unwrap();
    let p = parse(json!({})).unwrap().inv_freq(64).unwrap();
    assert_eq!(y[0], p[0]);
    assert!((y[31] - p[31] / 4.0).abs() < 1e-12);
    assert!((yarn.attention_factor() - (0.1 * 4f32.ln() + 1.0)).abs() < 1e-7);
    // llama3: wavelengths past the original context divided by factor, short ones kept
    let l3 = parse(json!({"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}))
    .unwrap();
    let (f, b) = (
        l3.inv_freq(128).unwrap(),
        RopeParams {
            theta: 5e5,
            scaling: RopeScaling::None,
        }
        .inv_freq(128)
        .unwrap(),
    );
    assert_eq!(f[0], b[0]);
    assert_eq!(f[63], b[63] / 8.0);
}
