"""Python client library for a loramux server (proto/loramux/v1/loramux.proto).

Requirements (Debian packages; use the system interpreter, /usr/bin/python3):
    apt-get install python3-grpcio python3-protobuf protobuf-compiler protobuf-compiler-grpc

The message classes and service stubs (loramux/v1/loramux_pb2.py, loramux_pb2_grpc.py, and
health_pb2.py, health_pb2_grpc.py for grpc.health.v1) are generated from the .proto files: the CMake build writes them
to build/client/python (target loramux_python_stubs); pass that folder as `stubs_dir`. Without
it they are generated into a temporary folder on first use, with `protoc` and Debian's
`grpc_python_plugin` (or grpc_tools when those are missing).

    from loramux_client import Client
    client = Client("127.0.0.1:50051", stubs_dir="build/client/python")
    info = client.upload("sql", "tests/data/adapters/lora-qv-r8")
    result = client.generate([109, 277, 235], adapter="sql", max_new_tokens=12)
    print(result.token_ids, result.finish_reason, result.adapter_version)

Every call that names an adapter sends it (without @version) as `x-loramux-adapter` metadata,
so a load balancer (deploy/nginx.conf) keeps each adapter on one replica. Calls that are safe to
repeat (generate, score, upload of the same bytes, list, get, load, unload, health) are retried
with exponential backoff and jitter when the server is UNAVAILABLE or the stream was reset on
the way (INTERNAL "Received RST_STREAM": a proxy such as nginx lost the replica mid-call, and no
server gave a verdict); delete is not. Failed calls raise
grpc.RpcError (e.code(), e.details()).

Thread-safety: one Client may be used from many threads at once (gRPC channels are).
"""

import atexit
import hashlib
import importlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import grpc

CHUNK_BYTES = 1 << 20  # the server refuses chunks over 1 MiB
ADAPTER_HEADER = "x-loramux-adapter"
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROTO_ROOT = os.path.join(REPO_ROOT, "proto")
# (include dir, file): the module path follows the file's path under its include dir, so
# grpc.health.v1 becomes the top-level `health_pb2` instead of a module inside grpcio's `grpc`.
PROTO_FILES = [(PROTO_ROOT, "loramux/v1/loramux.proto"),
               (os.path.join(PROTO_ROOT, "grpc", "health", "v1"), "health.proto")]


class Stubs:
    """The generated modules: pb2 (messages), grpc (service stubs), health_pb2, health_grpc."""

    def __init__(self, stubs_dir=None):
        if stubs_dir is None:
            stubs_dir = generate_stubs()
        if stubs_dir not in sys.path:
            sys.path.insert(0, stubs_dir)
        self.pb2 = importlib.import_module("loramux.v1.loramux_pb2")
        self.grpc = importlib.import_module("loramux.v1.loramux_pb2_grpc")
        self.health_pb2 = importlib.import_module("health_pb2")
        self.health_grpc = importlib.import_module("health_pb2_grpc")


def generate_stubs(out_dir=None):
    """Generates the Python modules of PROTO_FILES into out_dir (default: a temporary folder
    removed at exit) and returns it. Raises RuntimeError naming what is missing."""
    if out_dir is None:
        out_dir = tempfile.mkdtemp(prefix="loramux-py-")
        atexit.register(shutil.rmtree, out_dir, True)
    plugin = shutil.which("grpc_python_plugin")
    if shutil.which("protoc") and plugin:
        command = ["protoc", "--plugin=protoc-gen-grpc_python=" + plugin,
                   "--grpc_python_out=" + out_dir]
    else:
        try:
            import grpc_tools  # pylint: disable=import-outside-toplevel,unused-import
        except ImportError as e:
            raise RuntimeError("need protoc and grpc_python_plugin (apt-get install "
                               "protobuf-compiler protobuf-compiler-grpc) or python3-grpc-tools "
                               "to generate the loramux stubs") from e
        command = [sys.executable, "-m", "grpc_tools.protoc", "--grpc_python_out=" + out_dir]
    for include_dir, proto in PROTO_FILES:
        subprocess.run(command + ["-I", include_dir, "--python_out=" + out_dir, proto],
                       check=True, cwd=include_dir)
    return out_dir


def retryable(error):
    """True for an UNAVAILABLE call, or one whose HTTP/2 stream was reset on the way (a proxy
    lost its backend mid-call: gRPC reports INTERNAL "Received RST_STREAM ...")."""
    code = error.code()
    return code == grpc.StatusCode.UNAVAILABLE or (
        code == grpc.StatusCode.INTERNAL and (error.details() or "").startswith(
            "Received RST_STREAM"))


class GenerateResult:
    """A whole Generate stream: every token, the text, and the last message's fields."""

    def __init__(self):
        self.token_ids = []
        self.text = ""
        self.logprobs = []
        self.finish_reason = 0
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.adapter_version = ""


class Client:
    """Blocking client of one server address (or a load balancer in front of several)."""

    def __init__(self, target, admin_token=None, inference_token=None, root_cert=None, tls=False,
                 timeout=600.0, retries=3, initial_backoff=0.2, max_backoff=5.0,
                 stubs_dir=None, stubs=None):
        self.stubs = stubs or Stubs(stubs_dir)
        self.pb2 = self.stubs.pb2
        options = [("grpc.max_receive_message_length", 256 << 20)]
        if tls or root_cert is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=root_cert)
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.timeout = timeout
        self.retries = retries
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.admin_token = admin_token
        self.inference_token = inference_token
        self.inference = self.stubs.grpc.InferenceStub(self.channel)
        self.adapters = self.stubs.grpc.AdaptersStub(self.channel)
        self.retried = 0  # UNAVAILABLE failures retried so far (all threads; approximate)

    def close(self):
        self.channel.close()

    # --- plumbing ----------------------------------------------------------------------------
    def _metadata(self, admin, adapter=""):
        md = []
        token = self.admin_token if admin else self.inference_token
        if token:
            md.append(("authorization", "Bearer " + token))
        if adapter:
            md.append((ADAPTER_HEADER, adapter.split("@", 1)[0]))
        return md

    def _retrying(self, call):
        """Runs call() again while it fails retryably, up to self.retries more times."""
        backoff = self.initial_backoff
        for attempt in range(self.retries + 1):
            try:
                return call()
            except grpc.RpcError as e:
                if not retryable(e) or attempt == self.retries:
                    raise
                self.retried += 1
                time.sleep(backoff * random.uniform(1.0, 1.25))
                backoff = min(backoff * 2, self.max_backoff)
        raise AssertionError("unreachable")

    # --- health ------------------------------------------------------------------------------
    def health(self, service=""):
        """grpc.health.v1 Check: "SERVING", "NOT_SERVING", ... (raises when unreachable)."""
        pb2 = self.stubs.health_pb2
        stub = self.stubs.health_grpc.HealthStub(self.channel)
        response = self._retrying(lambda: stub.Check(pb2.HealthCheckRequest(service=service),
                                                     timeout=self.timeout))
        return pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    # --- inference ---------------------------------------------------------------------------
    def generate_request(self, prompt_ids=None, adapter="", max_new_tokens=0, temperature=0.0,
                         seed=None, top_k=0, top_p=0.0, prompt_text="", adapter_scale=0.0):
        sampling = self.pb2.SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature,
                                           top_k=top_k, top_p=top_p)
        if seed is not None:
            sampling.seed = seed
            sampling.has_seed = True
        request = self.pb2.GenerateRequest(adapter=adapter, sampling=sampling,
                                           adapter_scale=adapter_scale)
        if prompt_text:
            request.prompt_text = prompt_text
        else:
            request.prompt_token_ids.extend(prompt_ids or [])
        return request

    def stream_generate(self, request):
        """Yields GenerateResponse messages as the server streams them (not retried)."""
        return self.inference.Generate(request, timeout=self.timeout,
                                       metadata=self._metadata(False, request.adapter))

    def generate(self, prompt_ids=None, adapter="", **kwargs):
        """Runs a whole Generate stream and returns a GenerateResult; retried on UNAVAILABLE."""
        request = self.generate_request(prompt_ids, adapter=adapter, **kwargs)

        def once():
            result = GenerateResult()
            for message in self.stream_generate(request):
                result.token_ids.extend(message.token_ids)
                result.text += message.text
                result.logprobs.extend(message.logprobs)
                if message.finish_reason:
                    result.finish_reason = message.finish_reason
                    result.prompt_tokens = message.usage.prompt_tokens
                    result.generated_tokens = message.usage.generated_tokens
                if message.adapter_version:
                    result.adapter_version = message.adapter_version
            return result

        return self._retrying(once)

    def score(self, token_ids, adapter="", return_logits=False):
        request = self.pb2.ScoreRequest(adapter=adapter, token_ids=token_ids,
                                        return_logits=return_logits)
        return self._retrying(lambda: self.inference.Score(
            request, timeout=self.timeout, metadata=self._metadata(False, adapter)))

    # --- adapters ----------------------------------------------------------------------------
    def upload(self, name, adapter_dir=None, config_json=None, weights_path=None, fmt="PEFT"):
        """Uploads DIR/adapter_config.json + DIR/adapter_model.safetensors (or the given config
        text and weights file) as `name`: the weights are hashed, then streamed in 1 MiB chunks.
        Returns the stored AdapterInfo (its version is the sha256)."""
        if adapter_dir is not None:
            if config_json is None:
                with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
                    config_json = f.read()
            weights_path = weights_path or os.path.join(adapter_dir, "adapter_model.safetensors")
        if config_json is None or weights_path is None:
            raise ValueError("upload needs adapter_dir, or config_json and weights_path")
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

        return self._retrying(lambda: self.adapters.Upload(
            messages(), timeout=self.timeout, metadata=self._metadata(True, name)))

    def list(self):
        def once():
            adapters, token = [], ""
            while True:
                page = self.adapters.List(self.pb2.ListAdaptersRequest(page_token=token),
                                          timeout=self.timeout, metadata=self._metadata(True))
                adapters.extend(page.adapters)
                if not page.next_page_token or page.next_page_token == token:
                    return adapters
                token = page.next_page_token
        return self._retrying(once)

    def get(self, name):
        return self._retrying(lambda: self.adapters.Get(
            self.pb2.GetAdapterRequest(name=name), timeout=self.timeout,
            metadata=self._metadata(True, name)))

    def delete(self, name):
        # Not retried: a delete that took effect before the connection broke would come back
        # NOT_FOUND the second time.
        self.adapters.Delete(self.pb2.DeleteAdapterRequest(name=name), timeout=self.timeout,
                             metadata=self._metadata(True, name))

    def load(self, name, pin=False):
        return self._retrying(lambda: self.adapters.Load(
            self.pb2.LoadAdapterRequest(name=name, pin=pin), timeout=self.timeout,
            metadata=self._metadata(True, name)))

    def unload(self, name):
        return self._retrying(lambda: self.adapters.Unload(
            self.pb2.UnloadAdapterRequest(name=name), timeout=self.timeout,
            metadata=self._metadata(True, name)))
