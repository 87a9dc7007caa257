"""PEFT itself on a LoRA adapter weir serves (tests/lora.rs writes both and runs weir): the base
model loaded by transformers in f32, the adapter applied by `peft.PeftModel`, teacher-forced
log-probabilities of the prompt's tokens against weir's.

    python3 tests/peft_reference.py BASE_DIR ADAPTER_DIR TOKEN_IDS WEIR_LOGPROBS
"""
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM


def main():
    base, adapter = sys.argv[1], sys.argv[2]
    ids = [int(t) for t in sys.argv[3].split(",")]
    weir = [float(x) for x in sys.argv[4].split(",")]
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    plain = None
    with torch.no_grad():
        plain = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    model = PeftModel.from_pretrained(model, adapter).eval()
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    want = [lp[i, ids[i + 1]].item() for i in range(len(ids) - 1)]
    base_lp = [plain[i, ids[i + 1]].item() for i in range(len(ids) - 1)]
    assert len(weir) == len(want), (len(weir), len(want))
    err = max(abs(a - b) for a, b in zip(weir, want))
    moved = max(abs(a - b) for a, b in zip(base_lp, want))
    print(f"weir vs PEFT: max |logprob difference| {err:.2e} (the adapter moves them by {moved:.2e})")
    assert moved > 1e-2, "the adapter changed nothing under PEFT"
    assert err < 1e-3, err


if __name__ == "__main__":
    main()
