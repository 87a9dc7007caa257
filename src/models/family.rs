//! The registry of model families weir runs: it maps a checkpoint's architecture name (GGUF
//! `general.architecture`, `config.json` `model_type`) to the `Family` that loads it. A family is
//! one file composing the shared layers (`layers/`, `rope`, `fused`, `attention`) plus one entry
//! in `FAMILIES`; everything above (`manager`, `runner`) holds it as a `dyn Model`.

use super::config::ConfigError;
use super::Family;

/// Every family weir runs.
pub static FAMILIES: &[Family] = &[
    super::llama::FAMILY,
    super::gemma::FAMILY,
    super::encoder::FAMILY,
];

/// The family of GGUF architecture `arch`, or an error naming it and what weir runs.
pub fn for_gguf(arch: &str) -> std::result::Result<&'static Family, ConfigError> {
    FAMILIES
        .iter()
        .find(|f| f.gguf_archs.contains(&arch))
        .ok_or_else(|| unsupported(&format!("GGUF architecture {arch:?}"), |f| f.gguf_archs))
}

/// The family of `config.json` `model_type`, or an error naming it and what weir runs.
pub fn for_hf(model_type: &str) -> std::result::Result<&'static Family, ConfigError> {
    FAMILIES
        .iter()
        .find(|f| f.hf_model_types.contains(&model_type))
        .ok_or_else(|| unsupported(&format!("model_type {model_type:?}"), |f| f.hf_model_types))
}

fn unsupported(what: &str, names: fn(&Family) -> &'static [&'static str]) -> ConfigError {
    let known: Vec<&str> = FAMILIES
        .iter()
        .flat_map(|f| names(f).iter().copied())
        .collect();
    ConfigError::Unsupported(format!("{what}; weir runs {}", known.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_architectures_name_themselves_and_the_supported_ones() {
        let e = for_gguf("phi2").err().expect("phi2 is not registered");
        assert_eq!(
            e.to_string(),
            "unsupported model: GGUF architecture \"phi2\"; weir runs llama, qwen2, qwen3, phi3, qwen2moe, qwen3moe, olmoe, gemma2, gemma3"
        );
        let e = for_hf("phi").err().expect("phi (Phi-2) is not registered");
        assert!(
            e.to_string()
                .contains("model_type \"phi\"; weir runs llama"),
            "{e}"
        );
        assert_eq!(for_gguf("qwen2").unwrap().name, "llama");
        assert_eq!(for_hf("mistral").unwrap().name, "llama");
        assert_eq!(for_gguf("gemma3").unwrap().name, "gemma");
        assert_eq!(for_gguf("qwen3moe").unwrap().name, "llama");
        assert_eq!(for_hf("mixtral").unwrap().name, "llama");
        assert_eq!(for_hf("gemma2").unwrap().name, "gemma");
    }

    /// Every shape the benchmarks serve with `--load-format dummy` is one its family reads.
    #[test]
    fn benchmark_shapes_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/shapes");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let family = for_hf(crate::models::config::hf_model_type(&json)).unwrap();
            (family.check)(&json).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}
