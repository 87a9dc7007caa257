#!/usr/bin/env python3
"""The transformers baseline beside `weir bench`: what weir's seed service did (one `generate`
per request), static batches, and transformers' own continuous batching (`generate_batch`), on
random weights in a real shape (a config.json), the same load as weir's benchmark: prompts of
--prompt-tokens random token ids, exactly --output-tokens new tokens each (EOS ignored), greedy.

  python3 scripts/bench-transformers.py --config llama1b/config.json --device cuda \
      --batches 1,32,128 --continuous 128 --json out.json

Prints one line per load and writes them as JSON: output tokens/s = requests x output tokens /
wall seconds (prefill included, as in `weir bench`). Weights are made on the device in the
model dtype (no host copy), and every load runs once untimed first (CUDA kernels, cuBLAS plans,
generate_batch's graph capture).
"""
import argparse
import json
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="a Hugging Face config.json (random weights)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--output-tokens", type=int, default=128)
    p.add_argument("--batches", default="1,32,128",
                   help="static batch sizes for generate (1 = the seed service's one request)")
    p.add_argument("--continuous", type=int, default=128,
                   help="requests handed to generate_batch at once (0: skip)")
    p.add_argument("--max-batch-tokens", type=int, default=0,
                   help="generate_batch's token budget per step (0: its default)")
    p.add_argument("--json", help="write the results here")
    return p.parse_args()


def build_model(args, torch, transformers):
    cfg = transformers.AutoConfig.from_pretrained(args.config)
    dtype = getattr(torch, args.dtype)
    with torch.device(args.device):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.eval()
    # random weights make random EOS tokens: never stop early
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model, cfg


def sync(torch, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def static_generate(model, torch, args, batch, prompts):
    ids = torch.tensor(prompts[:batch], device=args.device)
    mask = torch.ones_like(ids)
    sync(torch, args.device)
    t = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                             max_new_tokens=args.output_tokens, min_new_tokens=args.output_tokens)
    sync(torch, args.device)
    seconds = time.perf_counter() - t
    new = out.shape[1] - ids.shape[1]
    assert new == args.output_tokens, (new, args.output_tokens)
    return seconds, batch * new


def continuous_generate(model, torch, transformers, args, prompts):
    """transformers' continuous batching on `prompts`; (seconds, tokens, label). The clock
    starts once the manager has warmed up (captured its CUDA graphs), as weir's starts with the
    server up; where that API is missing, `generate_batch` is timed whole, warm-up included."""
    gen = transformers.GenerationConfig(max_new_tokens=args.output_tokens,
                                        min_new_tokens=args.output_tokens, do_sample=False,
                                        eos_token_id=None, pad_token_id=0)
    kwargs = {}
    if args.max_batch_tokens:
        kwargs["continuous_batching_config"] = transformers.ContinuousBatchingConfig(
            max_batch_tokens=args.max_batch_tokens)
    want = len(prompts) * args.output_tokens
    try:
        from transformers.generation.continuous_batching.utils import WorkloadHints
        hints = WorkloadHints(max_prompt_length=args.prompt_tokens,
                              max_generated_length=args.output_tokens, num_requests=len(prompts))
        cm = model.continuous_batching_context_manager(generation_config=gen, block=True,
                                                       timeout=5, warmup=True,
                                                       workload_hints=hints, **kwargs)
    except (ImportError, AttributeError, TypeError):
        cm = None
    if cm is None:
        sync(torch, args.device)
        t = time.perf_counter()
        outs = model.generate_batch(inputs=prompts, generation_config=gen, **kwargs)
        sync(torch, args.device)
        seconds = time.perf_counter() - t
        results = list(outs.values())
        label = "generate_batch (warm-up timed)"
    else:
        with cm as manager:
            sync(torch, args.device)
            t = time.perf_counter()
            manager.add_requests(inputs=prompts, max_new_tokens=args.output_tokens)
            done = {}
            while len(done) < len(prompts):
                r = manager.get_result(timeout=1)
                if r is not None and r.is_finished():
                    done[r.request_id] = r
                elif r is None and not manager.is_running():
                    raise RuntimeError("the generation thread stopped")
            sync(torch, args.device)
            seconds = time.perf_counter() - t
        results = list(done.values())
        label = "generate_batch"
    tokens = sum(len(o.generated_tokens) for o in results)
    if len(results) != len(prompts) or tokens != want:
        raise RuntimeError(f"{len(results)} outputs with {tokens} tokens, expected {want}")
    return seconds, tokens, label


def main():
    args = parse_args()
    import torch
    import transformers

    torch.manual_seed(0)
    model, cfg = build_model(args, torch, transformers)
    n_params = sum(p.numel() for p in model.parameters())
    batches = [int(b) for b in args.batches.split(",") if b]
    most = max(batches + [args.continuous])
    g = torch.Generator().manual_seed(1)
    hi = min(cfg.vocab_size, 128000)
    prompts = torch.randint(1, hi, (most, args.prompt_tokens), generator=g).tolist()
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {args.device} "
          f"{args.dtype}, {n_params / 1e9:.2f}B parameters, {args.prompt_tokens}-token prompts, "
          f"{args.output_tokens} output tokens", flush=True)
    results = []

    def record(load, requests, seconds, tokens):
        r = {"load": load, "requests": requests, "seconds": round(seconds, 3),
             "output_tokens": tokens, "output_tokens_per_s": round(tokens / seconds, 1)}
        results.append(r)
        print(f"transformers {load:<30} requests {requests:>4}  {tokens / seconds:10.1f} tok/s "
              f"({seconds:.2f} s)", flush=True)

    for b in batches:
        static_generate(model, torch, args, b, prompts)  # untimed first run
        seconds, tokens = static_generate(model, torch, args, b, prompts)
        record("generate batch %d" % b, b, seconds, tokens)
    if args.continuous:
        try:
            continuous_generate(model, torch, transformers, args, prompts[: min(8, args.continuous)])
            seconds, tokens, label = continuous_generate(model, torch, transformers, args,
                                                         prompts[: args.continuous])
            record(label, args.continuous, seconds, tokens)
        except Exception as e:  # report, keep the static figures
            print(f"transformers generate_batch failed: {type(e).__name__}: {e}", flush=True)
            results.append({"load": "generate_batch", "error": str(e)})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                       "device": args.device, "dtype": args.dtype, "config": args.config,
                       "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
