//! `Bert` against candle-transformers' BERT, its batch invariance, pooling and the configs it
//! refuses.

use super::*;
use crate::testing::bert::{
    tiny_bert_config_json as tiny_config_json, tiny_bert_weights as tiny_weights,
};
use candle_transformers::models::bert as reference;

fn tiny_bert(act: &str, prefix: &str) -> Bert {
    let w = tiny_weights(7)
        .into_iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v));
    let vb = VarBuilder::from_tensors(w.collect(), DType::F32, &Device::Cpu);
    let cfg = BertConfig::from_hf(&tiny_config_json(act)).unwrap();
    Bert::load(vb, cfg).unwrap()
}

fn ids(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + salt) % 100).collect()
}

/// Each sequence's hidden states match candle-transformers' BertModel run on it alone.
#[test]
fn matches_candle_bert() {
    for (act, candle_act) in [("gelu", "gelu"), ("gelu_pytorch_tanh", "geluapproximate")] {
        let bert = tiny_bert(act, "");
        let mut json = tiny_config_json(act);
        json["hidden_act"] = candle_act.into();
        let cfg: reference::Config = serde_json::from_value(json).unwrap();
        let vb = VarBuilder::from_tensors(tiny_weights(7), DType::F32, &Device::Cpu);
        let want_model = reference::BertModel::load(vb, &cfg).unwrap();
        let (a, b) = (ids(5, 3), ids(11, 8));
        let packed = [a.clone(), b.clone()].concat();
        let got = bert.hidden_states(&packed, &[0..5, 5..16]).unwrap();
        for (seq, r) in [(a, 0..5), (b, 5..16)] {
            let input = Tensor::new(seq.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let types = input.zeros_like().unwrap();
            let want = want_model
                .forward(&input, &types, None)
                .unwrap()
                .squeeze(0)
                .unwrap();
            let diff = (got.narrow(0, r.start, r.len()).unwrap() - want).unwrap();
            let max = diff.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            assert!(max.to_scalar::<f32>().unwrap() < 1e-4, "{act}: {max}");
        }
    }
}

/// The hidden states of `ids` as one sequence.
fn alone(bert: &Bert, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
    bert.hidden_states(ids, std::slice::from_ref(&(0..ids.len())))?
        .to_vec2()
}

/// Each sequence's rows are bit-identical alone and packed with two others; the `bert.` prefix
/// loads the same model.
#[test]
fn batch_invariant() {
    let bert = tiny_bert("gelu", "");
    let seqs = [ids(7, 1), ids(13, 5), ids(3, 9)];
    let all = bert
        .hidden_states(&seqs.concat(), &[0..7, 7..20, 20..23])
        .unwrap();
    for (seq, start) in seqs.iter().zip([0, 7, 20]) {
        let packed = all.narrow(0, start, seq.len()).unwrap();
        assert_eq!(packed.to_vec2::<f32>().unwrap(), alone(&bert, seq).unwrap());
    }
    let prefixed = tiny_bert("gelu", "bert.");
    assert_eq!(
        alone(&prefixed, &seqs[1]).unwrap(),
        alone(&bert, &seqs[1]).unwrap()
    );
    let short = bert.hidden_states(&seqs[1], std::slice::from_ref(&(0..5)));
    assert!(short.is_err(), "ranges must cover the tokens");
    assert!(alone(&bert, &[100]).is_err(), "id outside the vocabulary");
    assert_eq!(bert.hidden_states(&[], &[]).unwrap().dims(), [0, 32]);
}

#[test]
fn pools_mean_cls_last() {
    let rows: Vec<f32> = (1..=10).map(|x| x as f32).collect();
    let h = Tensor::from_vec(rows, (5, 2), &Device::Cpu).unwrap();
    let seqs = [0..2, 2..5];
    let pooled = |p| pool(&h, &seqs, p).unwrap();
    assert_eq!(pooled(Pooling::Mean), vec![vec![2., 3.], vec![7., 8.]]);
    assert_eq!(pooled(Pooling::Cls), vec![vec![1., 2.], vec![5., 6.]]);
    assert_eq!(pooled(Pooling::Last), vec![vec![3., 4.], vec![9., 10.]]);
}

#[test]
fn config_refuses_what_it_does_not_run() {
    let refused = |key: &str, value: &str| {
        let mut json = tiny_config_json("gelu");
        json[key] = value.into();
        let err = BertConfig::from_hf(&json).unwrap_err().to_string();
        assert!(err.contains(value), "{err}");
    };
    refused("position_embedding_type", "relative_key");
    refused("hidden_act", "swish");
    refused("model_type", "roberta");
    let mut json = tiny_config_json("gelu");
    json.as_object_mut().unwrap().remove("hidden_size");
    assert!(BertConfig::from_hf(&json)
        .unwrap_err()
        .to_string()
        .contains("hidden_size"));
}

#[test]
fn reads_sentence_transformers_modules() {
    let dir = tempfile::tempdir().unwrap();
    let write = |modules: &str, pooling: &str| {
        std::fs::create_dir_all(dir.path().join("1_Pooling")).unwrap();
        std::fs::write(dir.path().join("modules.json"), modules).unwrap();
        std::fs::write(dir.path().join("1_Pooling/config.json"), pooling).unwrap();
    };
    assert_eq!(
        Pooling::from_sentence_transformers(dir.path()).unwrap(),
        None
    );
    let t = r#"{"path": "", "type": "sentence_transformers.models.Transformer"}"#;
    let p = r#"{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}"#;
    let n = r#"{"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}"#;
    write(
        &format!("[{t}, {p}, {n}]"),
        r#"{"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": false}"#,
    );
    assert_eq!(
        Pooling::from_sentence_transformers(dir.path()).unwrap(),
        Some(Pooling::Mean)
    );
    assert!(normalizes(dir.path()));
    write(
        &format!("[{t}, {p}]"),
        r#"{"pooling_mode_max_tokens": true}"#,
    );
    let err = Pooling::from_sentence_transformers(dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("pooling_mode_max_tokens"), "{err}");
    assert!(!normalizes(dir.path()));
    let d = r#"{"path": "2_Dense", "type": "sentence_transformers.models.Dense"}"#;
    write(
        &format!("[{t}, {p}, {d}]"),
        r#"{"pooling_mode_cls_token": true}"#,
    );
    assert!(Pooling::from_sentence_transformers(dir.path()).is_err());
}
