#!/usr/bin/env python3
"""Command-line client for a loramux server, on the Python client library (loramux_client.py).

Requirements (Debian packages; use the system interpreter, /usr/bin/python3):
    apt-get install python3-grpcio python3-protobuf protobuf-compiler protobuf-compiler-grpc
Pass --stubs_dir build/client/python to use the modules the CMake build generated; without it
they are generated into a temporary folder at start-up.

Examples:
    loramux_cli.py --server 127.0.0.1:50051 upload my-task tests/data/adapters/lora-qv-r8
    loramux_cli.py list
    loramux_cli.py generate --adapter my-task --max_new_tokens 12 109 277 235 177 125
    loramux_cli.py score --adapter my-task 109 277 235 177 125
    loramux_cli.py health

Exit codes as the C++ CLI's: 0 done, 1 the server refused or failed the call, 2 bad usage,
3 the server could not be reached (UNAVAILABLE after the retries).
"""

import argparse
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loramux_client import Client  # noqa: E402  pylint: disable=wrong-import-position


def describe(pb2, info):
    return "%s@%s format=%s rank=%d dora=%s size=%d residency=%s pinned=%s targets=%s" % (
        info.name, info.version[:12], pb2.AdapterFormat.Name(info.format), info.rank,
        info.use_dora, info.size_bytes, pb2.Residency.Name(info.residency), info.pinned,
        ",".join(info.target_modules))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--token_file", help="bearer token for both services")
    parser.add_argument("--tls_ca_file", help="use TLS, trusting this PEM root certificate")
    parser.add_argument("--timeout_s", type=float, default=600)
    parser.add_argument("--retries", type=int, default=3,
                        help="retries of safe calls on UNAVAILABLE, with backoff")
    parser.add_argument("--stubs_dir", help="directory holding loramux/v1/loramux_pb2.py")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload", help="upload DIR/adapter_config.json + adapter_model.safetensors")
    up.add_argument("name")
    up.add_argument("dir")
    up.add_argument("--format", default="peft", choices=["peft", "seed"])
    sub.add_parser("list")
    sub.add_parser("health")
    for name in ("get", "delete", "unload"):
        sub.add_parser(name).add_argument("name")
    load = sub.add_parser("load")
    load.add_argument("name")
    load.add_argument("--pin", action="store_true")
    gen = sub.add_parser("generate")
    gen.add_argument("--adapter", default="")
    gen.add_argument("--max_new_tokens", type=int, default=0)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--seed", type=int)
    gen.add_argument("tokens", type=int, nargs="+")
    score = sub.add_parser("score")
    score.add_argument("--adapter", default="")
    score.add_argument("tokens", type=int, nargs="+")
    args = parser.parse_args()

    token = None
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
    root_cert = None
    if args.tls_ca_file:
        with open(args.tls_ca_file, "rb") as f:
            root_cert = f.read()
    client = Client(args.server, admin_token=token, inference_token=token, root_cert=root_cert,
                    timeout=args.timeout_s or None, retries=args.retries,
                    stubs_dir=args.stubs_dir)
    pb2 = client.pb2
    try:
        if args.command == "health":
            status = client.health()
            print(status)
            return 0 if status == "SERVING" else 1
        if args.command == "upload":
            info = client.upload(args.name, args.dir, fmt=args.format.upper())
            print("uploaded", describe(pb2, info))
        elif args.command == "list":
            for info in client.list():
                print(describe(pb2, info))
        elif args.command == "get":
            print(describe(pb2, client.get(args.name)))
        elif args.command == "delete":
            client.delete(args.name)
            print("deleted", args.name)
        elif args.command == "load":
            print(describe(pb2, client.load(args.name, pin=args.pin)))
        elif args.command == "unload":
            print(describe(pb2, client.unload(args.name)))
        elif args.command == "generate":
            result = client.generate(args.tokens, adapter=args.adapter,
                                     max_new_tokens=args.max_new_tokens,
                                     temperature=args.temperature, seed=args.seed)
            print(" ".join(str(t) for t in result.token_ids))
            print("finish=%s prompt_tokens=%d generated_tokens=%d adapter_version=%s" % (
                pb2.FinishReason.Name(result.finish_reason), result.prompt_tokens,
                result.generated_tokens, result.adapter_version or "-"), file=sys.stderr)
        elif args.command == "score":
            response = client.score(args.tokens, adapter=args.adapter)
            for i, lp in enumerate(response.token_logprobs):
                print("%d\t%d\t%.6f" % (i + 1, args.tokens[i + 1], lp))
            print("sum_logprob=%.6f" % sum(response.token_logprobs), file=sys.stderr)
    except grpc.RpcError as e:
        print("loramux_cli: %s failed: %s: %s" % (args.command, e.code().name, e.details()),
              file=sys.stderr)
        return 3 if e.code() == grpc.StatusCode.UNAVAILABLE else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
