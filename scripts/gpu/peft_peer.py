#!/usr/bin/env python3
"""The peer for issue 13's table: HuggingFace transformers + PEFT on a random Llama of the same
shape as bench/gpu_bench's (same layers, widths, heads, vocabulary, dtype) with rank-16 LoRA
(and DoRA) adapters on all 7 projections, decode tokens/s at each batch: the bare base model,
then PEFT with `adapter_names` mixed batches (rows spread evenly over N distinct adapters, as
gpu_bench spreads them; "__base__" rows for N = 0). The weights are random like gpu_bench's but
not the same values: throughput does not depend on them.

Runs on the GPU machine's python3 (torch, transformers and peft are installed there). Where they
are missing (the CPU dry run here) it says so and exits 0.

  python3 scripts/gpu/peft_peer.py --device=cuda:0 [--layers=22 ...] [--batches=1,32,128]
"""
import argparse
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--layers", type=int, default=22)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--intermediate", type=int, default=5632)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv_heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--adapters", default="0,1,32")
    p.add_argument("--batches", default="1,32,128")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--dora", action="store_true", help="DoRA adapters too (PEFT may refuse mixed batches)")
    return p.parse_args()


def main():
    args = parse_args()
    try:
        import torch
        import transformers
        import peft
    except ImportError as e:
        print(f"# peft_peer: skipped, {e.name} is not installed for {sys.executable}")
        return 0
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                         intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                         max_position_embeddings=max(2048, args.context + args.steps + 8))
    torch.set_default_dtype(dtype)
    with torch.device(device):  # initialised on the device, in the dtype: no 4 GB float32 detour
        model = LlamaForCausalLM(config).eval()
    torch.set_default_dtype(torch.float32)
    params = sum(p.numel() for p in model.parameters())
    print(f"# peft_peer: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}; {args.layers} layers, hidden {args.hidden}, "
          f"{params / 1e6:.0f}M parameters, {args.dtype} on {device}")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    @torch.no_grad()
    def decode(m, batch, extra):
        ids = torch.randint(0, args.vocab, (batch, args.context), device=device)
        out = m(input_ids=ids, use_cache=True, **extra)
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        for _ in range(2):  # warm-up
            out = m(input_ids=nxt, past_key_values=past, use_cache=True, **extra)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            out = m(input_ids=nxt, past_key_values=past, use_cache=True, **extra)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        sync()
        return batch * args.steps / (time.perf_counter() - start)

    batches = [int(b) for b in args.batches.split(",") if b]
    counts = [int(n) for n in args.adapters.split(",") if n]
    print(f"\n## HF transformers + PEFT decode (context {args.context}, {args.steps} timed steps)")
    print("| batch | adapters | kind | tokens/s |\n|---:|---:|---|---:|")
    for batch in batches:
        print(f"| {batch} | bare model | base | {decode(model, batch, {}):.1f} |", flush=True)

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    kinds = [("LoRA", False)] + ([("DoRA", True)] if args.dora else [])
    for kind, use_dora in kinds:
        n_max = max(counts)
        cfg = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=targets,
                         init_lora_weights=False, use_dora=use_dora)
        pm = get_peft_model(model, cfg, adapter_name="a0")
        for i in range(1, n_max):
            pm.add_adapter(f"a{i}", cfg)
        pm = pm.to(device=device, dtype=dtype).eval()
        for batch in batches:
            for n in counts:
                if n > batch:
                    continue
                names = ["__base__"] * batch if n == 0 else [f"a{k * n // batch}" for k in range(batch)]
                try:
                    tps = f"{decode(pm, batch, {'adapter_names': names}):.1f}"
                except Exception as e:  # e.g. PEFT refusing adapter_names with DoRA
                    tps = f"refused: {type(e).__name__}: {str(e)[:80]}"
                print(f"| {batch} | {n} | {kind} (adapter_names) | {tps} |", flush=True)
        model = pm.unload()  # the bare base again for the next kind
    return 0


if __name__ == "__main__":
    sys.exit(main())
