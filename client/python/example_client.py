#!/usr/bin/env python3
"""Example Python client for a loramux server (proto/loramux/v1/loramux.proto).

Shows every call a Python user needs: upload an adapter (manifest, then <= 1 MiB chunks with the
weights' sha256 and size), list adapters, generate (server streaming) and score.

Requirements (Debian packages; use the system interpreter, /usr/bin/python3):
    apt-get install python3-grpcio python3-protobuf protobuf-compiler
The message classes are generated at start-up into a temporary directory, by `protoc` when it is
on PATH, else by grpc_tools (`apt-get install python3-grpc-tools`, or `pip install grpcio-tools`;
by hand: `python3 -m grpc_tools.protoc -I proto --python_out=OUT proto/loramux/v1/loramux.proto`).
The service stubs are written out below with grpc's generic channel methods, so no gRPC codegen
plugin is needed. Pass --stubs_dir to use messages generated ahead of time instead.

Examples:
    example_client.py --server 127.0.0.1:50051 upload my-task tests/data/adapters/lora-qv-r8
    example_client.py list
    example_client.py generate --adapter my-task --max_new_tokens 12 109 277 235 177 125
    example_client.py score --adapter my-task 109 277 235 177 125
"""

import argparse
import atexit
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

import grpc

CHUNK_BYTES = 1 << 20  # the server refuses chunks over 1 MiB
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROTO_ROOT = os.path.join(REPO_ROOT, "proto")
PROTO_FILE = os.path.join(PROTO_ROOT, "loramux", "v1", "loramux.proto")


def load_messages(stubs_dir=None):
    """Returns the loramux_pb2 module, generating it first unless stubs_dir holds it."""
    if stubs_dir is None:
        stubs_dir = tempfile.mkdtemp(prefix="loramux-py-")
        atexit.register(shutil.rmtree, stubs_dir, True)
        args = ["-I", PROTO_ROOT, "--python_out=" + stubs_dir, PROTO_FILE]
        if shutil.which("protoc"):
            subprocess.run(["protoc"] + args, check=True)
        else:
            try:
                from grpc_tools import protoc  # pylint: disable=import-outside-toplevel
            except ImportError:
                sys.exit("example_client: need `protoc` on PATH or grpc_tools to generate the "
                         "message classes; apt-get install protobuf-compiler (or "
                         "python3-grpc-tools)")
            if protoc.main(["grpc_tools.protoc"] + args) != 0:
                sys.exit("example_client: grpc_tools.protoc failed on " + PROTO_FILE)
    sys.path.insert(0, stubs_dir)
    return importlib.import_module("loramux.v1.loramux_pb2")


class LoramuxClient:
    """Blocking client. Methods raise grpc.RpcError on failure (e.code(), e.details())."""

    def __init__(self, pb2, target, admin_token=None, inference_token=None, root_cert=None,
                 tls=False, timeout=None):
        self.pb2 = pb2
        options = [("grpc.max_receive_message_length", 256 << 20)]
        if tls or root_cert is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=root_cert)
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.timeout = timeout
        self.admin_md = (("authorization", "Bearer " + admin_token),) if admin_token else ()
        self.inference_md = (("authorization", "Bearer " + inference_token),) if inference_token else ()

        def method(kind, service, name, request_cls, response_cls):
            return getattr(self.channel, kind)(
                "/loramux.v1.%s/%s" % (service, name),
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString)

        p = pb2
        self._generate = method("unary_stream", "Inference", "Generate", p.GenerateRequest,
                                p.GenerateResponse)
        self._score = method("unary_unary", "Inference", "Score", p.ScoreRequest, p.ScoreResponse)
        self._upload = method("stream_unary", "Adapters", "Upload", p.UploadRequest, p.AdapterInfo)
        self._list = method("unary_unary", "Adapters", "List", p.ListAdaptersRequest,
                            p.ListAdaptersResponse)
        self._get = method("unary_unary", "Adapters", "Get", p.GetAdapterRequest, p.AdapterInfo)
        self._delete = method("unary_unary", "Adapters", "Delete", p.DeleteAdapterRequest,
                              p.DeleteAdapterResponse)
        self._load = method("unary_unary", "Adapters", "Load", p.LoadAdapterRequest, p.AdapterInfo)
        self._unload = method("unary_unary", "Adapters", "Unload", p.UnloadAdapterRequest,
                              p.AdapterInfo)

    # --- inference ---------------------------------------------------------------------------
    def generate(self, prompt_ids, adapter="", max_new_tokens=0, temperature=0.0, seed=None,
                 top_k=0, top_p=0.0):
        """Yields GenerateResponse messages as the server streams them."""
        sampling = self.pb2.SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature,
                                           top_k=top_k, top_p=top_p)
        if seed is not None:
            sampling.seed = seed
            sampling.has_seed = True
        request = self.pb2.GenerateRequest(adapter=adapter, prompt_token_ids=prompt_ids,
                                           sampling=sampling)
        return self._generate(request, metadata=self.inference_md, timeout=self.timeout)

    def score(self, token_ids, adapter="", return_logits=False):
        request = self.pb2.ScoreRequest(adapter=adapter, token_ids=token_ids,
                                        return_logits=return_logits)
        return self._score(request, metadata=self.inference_md, timeout=self.timeout)

    # --- adapters ----------------------------------------------------------------------------
    def upload(self, name, config_json, weights_path, fmt="PEFT"):
        """Uploads one adapter; the weights are hashed, then streamed from disk in 1 MiB chunks."""
        digest = hashlib.sha256()
        size = 0
        with open(weights_path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK_BYTES), b""):
                digest.update(block)
                size += len(block)
        manifest = self.pb2.UploadManifest(name=name, format=self.pb2.AdapterFormat.Value(fmt),
                                           config_json=config_json, size_bytes=size,
                                           sha256=digest.hexdigest())

        def messages():
            yield self.pb2.UploadRequest(manifest=manifest)
            with open(weights_path, "rb") as f:
                for block in iter(lambda: f.read(CHUNK_BYTES), b""):
                    yield self.pb2.UploadRequest(chunk=block)

        return self._upload(messages(), metadata=self.admin_md, timeout=self.timeout)

    def list(self):
        adapters, token = [], ""
        while True:
            page = self._list(self.pb2.ListAdaptersRequest(page_token=token),
                              metadata=self.admin_md, timeout=self.timeout)
            adapters.extend(page.adapters)
            if not page.next_page_token or page.next_page_token == token:
                return adapters
            token = page.next_page_token

    def get(self, name):
        return self._get(self.pb2.GetAdapterRequest(name=name), metadata=self.admin_md,
                         timeout=self.timeout)

    def delete(self, name):
        self._delete(self.pb2.DeleteAdapterRequest(name=name), metadata=self.admin_md,
                     timeout=self.timeout)

    def load(self, name, pin=False):
        return self._load(self.pb2.LoadAdapterRequest(name=name, pin=pin), metadata=self.admin_md,
                          timeout=self.timeout)

    def unload(self, name):
        return self._unload(self.pb2.UnloadAdapterRequest(name=name), metadata=self.admin_md,
                            timeout=self.timeout)


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
    parser.add_argument("--stubs_dir", help="directory holding loramux/v1/loramux_pb2.py")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload", help="upload DIR/adapter_config.json + adapter_model.safetensors")
    up.add_argument("name")
    up.add_argument("dir")
    up.add_argument("--format", default="peft", choices=["peft", "seed"])
    sub.add_parser("list")
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

    pb2 = load_messages(args.stubs_dir)
    token = None
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
    root_cert = None
    if args.tls_ca_file:
        with open(args.tls_ca_file, "rb") as f:
            root_cert = f.read()
    client = LoramuxClient(pb2, args.server, admin_token=token, inference_token=token,
                           root_cert=root_cert, timeout=args.timeout_s or None)
    try:
        if args.command == "upload":
            with open(os.path.join(args.dir, "adapter_config.json")) as f:
                config = f.read()
            info = client.upload(args.name, config,
                                 os.path.join(args.dir, "adapter_model.safetensors"),
                                 fmt=args.format.upper())
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
            last = None
            for response in client.generate(args.tokens, adapter=args.adapter,
                                            max_new_tokens=args.max_new_tokens,
                                            temperature=args.temperature, seed=args.seed):
                if response.token_ids:
                    print(" ".join(str(t) for t in response.token_ids), end=" ", flush=True)
                last = response
            print()
            if last is not None:
                print("finish=%s prompt_tokens=%d generated_tokens=%d adapter_version=%s" % (
                    pb2.FinishReason.Name(last.finish_reason), last.usage.prompt_tokens,
                    last.usage.generated_tokens, last.adapter_version or "-"), file=sys.stderr)
        elif args.command == "score":
            response = client.score(args.tokens, adapter=args.adapter)
            for i, lp in enumerate(response.token_logprobs):
                print("%d\t%d\t%.6f" % (i + 1, args.tokens[i + 1], lp))
            print("sum_logprob=%.6f" % sum(response.token_logprobs), file=sys.stderr)
    except grpc.RpcError as e:
        print("example_client: %s failed: %s: %s" % (args.command, e.code().name, e.details()),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
