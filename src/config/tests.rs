//! Flag parsing and validation.

use super::parse::*;
use super::*;
use crate::manager::limits::CPU_BATCH_LIMITS;

#[test]
fn batch_limits_default_by_device_and_stay_consistent() {
    let limits = |args: &[&str]| ServeArgs::parse_from_args(args).validate().unwrap();
    let cpu = candle_core::Device::Cpu;
    assert_eq!(limits(&[]).batch_limits(&cpu), CPU_BATCH_LIMITS);
    let given = limits(&["--max-num-seqs", "8", "--max-num-batched-tokens", "64"]);
    assert_eq!(given.batch_limits(&cpu), (8, 64));
    // one given: the other default bends so that the budget holds every sequence
    assert_eq!(
        limits(&["--max-num-seqs", "600"]).batch_limits(&cpu),
        (600, 600)
    );
    let tokens = limits(&["--max-num-batched-tokens", "32"]);
    assert_eq!(tokens.batch_limits(&cpu), (32, 32));
    let bad = ServeArgs::parse_from_args(["--max-num-seqs", "8", "--max-num-batched-tokens", "4"]);
    assert!(bad
        .validate()
        .unwrap_err()
        .contains("at least --max-num-seqs"));
}

#[test]
fn parses_sizes() {
    assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
    assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
    assert_eq!(parse_bytes("1.5GB").unwrap(), 1_500_000_000);
    assert_eq!(parse_bytes("4096").unwrap(), 4096);
    assert!(parse_bytes("2 parsecs").is_err());
    assert_eq!(parse_kv_memory("2GiB").unwrap(), KvMemory::Bytes(2 << 30));
    assert_eq!(
        parse_kv_memory("0.4").unwrap(),
        KvMemory::FractionOfAvailable(0.4)
    );
    assert_eq!(
        parse_kv_memory("25%").unwrap(),
        KvMemory::FractionOfAvailable(0.25)
    );
    assert!(parse_kv_memory("1.5").is_err());
}

#[test]
fn models_config_declares_models_with_their_settings() {
    let decls = parse_models_config(
        r#"
        [[models]]
        id = "smol"
        source = "/m/smol.gguf"
        pinned = true
        max_model_len = 2048
        kv_cache_memory = "512MiB"
        dtype = "f32"

        [[models]]
        id = "llama"
        source = "hf://meta-llama/Llama-3.2-1B@main"
        "#,
    )
    .unwrap();
    assert_eq!(decls.len(), 2);
    assert!(decls[0].pinned && !decls[1].pinned);
    let o = decls[0].overrides;
    assert_eq!(o.max_model_len, Some(2048));
    assert_eq!(o.kv_cache_memory, Some(KvMemory::Bytes(512 << 20)));
    assert_eq!(o.dtype, Some(DTypeSpec::F32));
    assert!(parse_models_config("[[models]]\nid = \"x\"\nsource = \"y\"\nbogus = 1\n").is_err());
    assert!(
        parse_models_config("[[models]]\nid = \"x\"\nsource = \"y\"\ndtype = \"f8\"\n").is_err()
    );
}

#[test]
fn flags_parse_and_validate() {
    let a = ServeArgs::parse_from_args([
        "--model",
        "a=/x.gguf",
        "--block-size",
        "32",
        "--num-kv-blocks",
        "100",
    ]);
    assert_eq!(a.models[0].id, "a");
    let l = a.validate().unwrap();
    assert_eq!((l.block_size, l.num_kv_blocks), (32, Some(100)));
    let bad = ServeArgs::parse_from_args(["--block-size", "12"]);
    assert!(bad.validate().is_err());
    let bad = ServeArgs::parse_from_args(["--gpu-memory-utilization", "1.5"]);
    assert!(bad.validate().is_err());
    let a = ServeArgs::parse_from_args(["--device", "cuda:1", "--dtype", "f16"]);
    let l = a.validate().unwrap();
    assert_eq!((l.device, l.dtype), (DeviceSpec::Cuda(1), DTypeSpec::F16));
    let parsed = Cli::try_parse_from(["weir", "--device", "gpu"]);
    assert!(parsed
        .unwrap_err()
        .to_string()
        .contains("cpu, cuda or cuda:N"));
}

#[test]
fn kv_events_flags_read_vllms_json() {
    let off = ServeArgs::parse_from_args(["--model", "a=/x.gguf"]);
    assert_eq!(off.kv_events().unwrap(), None);
    let a = ServeArgs::parse_from_args([
        "--kv-events-config",
        r#"{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "tcp://*:6000",
            "replay_endpoint": "tcp://*:6001", "topic": "kv", "hwm": 1000}"#,
    ]);
    let cfg = a.kv_events().unwrap().unwrap();
    assert_eq!(
        (
            cfg.endpoint.as_str(),
            cfg.replay_endpoint.as_deref(),
            cfg.topic.as_str()
        ),
        ("tcp://*:6000", Some("tcp://*:6001"), "kv")
    );
    assert_eq!(cfg.buffer_steps, 10_000);
    let disabled = ServeArgs::parse_from_args(["--kv-events-config", r#"{"publisher": "zmq"}"#]);
    assert_eq!(disabled.kv_events().unwrap(), None);
    for bad in [
        r#"{"enable_kv_cache_events": true, "publisher": "kafka"}"#,
        r#"{"enable_kv_cache_events": true, "endpont": "tcp://*:1"}"#,
    ] {
        let a = ServeArgs::parse_from_args(["--kv-events-config", bad]);
        assert!(a.kv_events().is_err(), "{bad}");
    }
    let short = ServeArgs::parse_from_args(["--kv-events-endpoint", "tcp://*:7000"]);
    assert_eq!(short.kv_events().unwrap().unwrap().endpoint, "tcp://*:7000");
}

#[test]
fn lora_modules_attach_to_the_one_model() {
    let a = ServeArgs::parse_from_args([
        "--model",
        "base=/m",
        "--lora-modules",
        "sql=/a/sql",
        "chat=/a/chat",
    ]);
    let mut decls = a.model_decls().unwrap();
    a.attach_loras(&mut decls).unwrap();
    let names: Vec<&str> = decls[0].loras.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(names, ["sql", "chat"]);
    let two = ServeArgs::parse_from_args([
        "--model",
        "a=/m",
        "--model",
        "b=/n",
        "--lora-modules",
        "sql=/a/sql",
    ]);
    let mut decls = two.model_decls().unwrap();
    assert!(two.attach_loras(&mut decls).is_err());
    let toml =
        "[[models]]\nid = \"x\"\nsource = \"/m\"\nloras = [{ name = \"sql\", path = \"/a\" }]\n";
    let d = parse_models_config(toml).unwrap();
    assert_eq!(
        (d[0].loras[0].id.as_str(), d[0].loras[0].source.as_str()),
        ("sql", "/a")
    );
}
