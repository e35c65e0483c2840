#!/usr/bin/python3
"""Scale-out end to end: three real loramux_server replicas sharing one adapter store, behind
nginx (Debian's) running a config derived from deploy/nginx.conf, driven by the Python client
(client/python/loramux_client.py) and the C++ CLI. Everything on loopback.

Checks, in order (one server set-up, so the test methods run in name order):
  1. health through nginx (C++ CLI, Python client);
  2. read-your-writes: an adapter uploaded through nginx is served, with the golden tokens,
     through nginx and by every replica; a re-upload is served by every replica at once;
  3. 16 adapters: a quiet single run (sequential, through nginx) gives the golden tokens; each
     adapter is then resident on exactly one replica (its affine one), per Adapters.Get on each
     replica and per each replica's /metrics;
  4. 64 concurrent clients over the 16 adapters give exactly the quiet run's tokens and scores,
     and no adapter was loaded on a second replica;
  5. one replica is killed (SIGKILL) while 64 clients run; every client's retry succeeds, with
     the quiet run's tokens.
It prints a line `NGINX_E2E_FIGURES {json}` with the affinity and failover figures.

Usage: nginx_e2e_test.py --build_dir BUILD (the CMake build: loramux_server, client/loramux,
client/python stubs). Needs nginx, python3-grpcio (scripts/install_deps.sh).
"""

import argparse
import ctypes
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(REPO, "tests", "data")
sys.path.insert(0, os.path.join(REPO, "client", "python"))
import grpc  # noqa: E402  pylint: disable=wrong-import-position
import loramux_client  # noqa: E402  pylint: disable=wrong-import-position

ARGS = None
ADAPTER_FILES = ["lora-qv-r8", "lora-all-r4-rslora", "dora-qkvo-r8", "lora-pattern", "dora-mlp-r4"]
NUM_ADAPTERS = 16
NUM_CLIENTS = 64
MAX_NEW_TOKENS = 12  # the golden generations' length
FIGURES = {}


def golden(key):
    """[(prompt ids, greedy new tokens)] of results.json's generation cases for `key`."""
    with open(os.path.join(DATA, "cases", "results.json")) as f:
        cases = json.load(f)["generation"][key]
    return [(c["input_ids"], c["new_tokens"]) for c in cases]


def with_metadata(weights, tag):
    """The safetensors bytes with `tag` in the header's __metadata__: the same tensors, another
    sha256, so each adapter name is its own version in the store and its own cache entry."""
    (header_len,) = struct.unpack("<Q", weights[:8])
    header = json.loads(weights[8:8 + header_len])
    header.setdefault("__metadata__", {})["loramux_test_tag"] = tag
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + weights[8 + header_len:]


def set_pdeathsig():
    """Child dies with the test (prctl PR_SET_PDEATHSIG = 1, SIGKILL)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(page, series):
    """The value of the sample `series` ("name" or "name{labels}") in a /metrics page."""
    for line in page.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError("no sample %s in /metrics" % series)


class Replica:
    """One loramux_server on 127.0.0.1:0 (gRPC and metrics) with the shared store."""

    def __init__(self, index, store, workdir):
        self.index = index
        self.log_path = os.path.join(workdir, "replica%d.log" % index)
        env = dict(os.environ, OMP_NUM_THREADS="1")  # three replicas on a small machine
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [os.path.join(ARGS.build_dir, "loramux_server"),
                 "--model_dir=" + os.path.join(DATA, "llama-tiny"), "--adapter_store=" + store,
                 "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0", "--drain_timeout_s=5",
                 "--dtype=float32"],  # the golden tokens are float32's
                stdout=subprocess.PIPE, stderr=log, env=env, preexec_fn=set_pdeathsig)
        self.address = self._read_address(timeout=120)
        match = re.search(r"metrics on http://([0-9.:]+)/metrics", self.log())
        assert match, "replica %d logged no metrics address:\n%s" % (index, self.log())
        self.metrics_address = match.group(1)

    def _read_address(self, timeout):
        deadline = time.monotonic() + timeout
        out = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 1.0)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 4096)
                if not chunk:
                    break
                out += chunk
                match = re.search(rb"listening on (\S+)\n", out)
                if match:
                    return match.group(1).decode()
        raise AssertionError("replica %d did not start:\n%s" % (self.index, self.log()))

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def metrics(self):
        with urllib.request.urlopen("http://%s/metrics" % self.metrics_address, timeout=10) as r:
            return r.read().decode()

    def alive(self):
        return self.process.poll() is None

    def kill(self):
        if self.alive():
            self.process.kill()
        self.process.wait(timeout=30)


class Nginx:
    """nginx (unprivileged) on 127.0.0.1:PORT with deploy/nginx.conf's upstream, listen and
    paths replaced; returns once it accepts connections."""

    def __init__(self, replicas, workdir):
        self.prefix = os.path.join(workdir, "nginx")
        os.makedirs(os.path.join(self.prefix, "tmp"))
        with open(os.path.join(REPO, "deploy", "nginx.conf")) as f:
            conf = f.read()
        servers = re.findall(r"server loramux-\d+\.loramux:50051", conf)
        assert len(servers) == 3, "deploy/nginx.conf should list 3 upstream servers: %s" % servers
        for server, replica in zip(servers, replicas):
            conf = conf.replace(server, "server " + replica.address, 1)
        self.port = free_port()
        assert conf.count("listen 8080 http2;") == 1, "deploy/nginx.conf: no `listen 8080 http2;`"
        conf = conf.replace("listen 8080 http2;", "listen 127.0.0.1:%d http2;" % self.port)
        temp = os.path.join(self.prefix, "tmp")
        paths = "".join("  %s_temp_path %s/%s;\n" % (kind, temp, kind)
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        assert conf.count("http {\n") == 1
        conf = conf.replace("http {\n", "http {\n  access_log off;\n" + paths)
        conf = ("daemon off;\nworker_processes 1;\npid %s/nginx.pid;\nerror_log %s/error.log "
                "warn;\n" % (self.prefix, self.prefix)) + conf
        self.conf_path = os.path.join(self.prefix, "nginx.conf")
        with open(self.conf_path, "w") as f:
            f.write(conf)
        command = ["nginx", "-p", self.prefix, "-c", self.conf_path, "-e",
                   os.path.join(self.prefix, "error.log")]
        if os.geteuid() == 0:
            # Unprivileged, as in a pod: nobody needs to write only the prefix.
            for root, dirs, files in os.walk(workdir):
                for name in dirs + files:
                    os.chown(os.path.join(root, name), 65534, 65534)
            os.chown(workdir, 65534, 65534)
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + command
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT, preexec_fn=set_pdeathsig)
        self.address = "127.0.0.1:%d" % self.port
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "nginx exited:\n" + self.error_log()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("nginx did not listen:\n" + self.error_log())

    def error_log(self):
        try:
            with open(os.path.join(self.prefix, "error.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class NginxScaleOutTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="loramux-nginx-")
        os.chmod(cls.workdir, 0o755)
        cls.store = os.path.join(cls.workdir, "store")
        os.makedirs(cls.store)
        cls.replicas = []
        cls.nginx = None
        try:
            cls.replicas = [Replica(i, cls.store, cls.workdir) for i in range(3)]
            cls.nginx = Nginx(cls.replicas, cls.workdir)
            cls.stubs = loramux_client.Stubs(ARGS.stubs_dir)
            cls.lb = cls.client(cls.nginx.address)
            cls.direct = [cls.client(r.address) for r in cls.replicas]
            deadline = time.monotonic() + 30
            while cls.lb_health() != "SERVING":
                assert time.monotonic() < deadline, "nginx never reported SERVING"
                time.sleep(0.2)
        except BaseException:
            cls.tearDownClass()
            raise
        cls.expected = {}  # (adapter name, prompt index) -> tokens of the quiet run
        cls.expected_scores = {}  # adapter name -> token_logprobs of the quiet run

    @classmethod
    def tearDownClass(cls):
        if cls.nginx is not None:
            cls.nginx.stop()
        for replica in cls.replicas:
            replica.kill()
        if os.environ.get("LORAMUX_KEEP_TEST_DIR") is None:
            shutil.rmtree(cls.workdir, ignore_errors=True)
        if FIGURES:
            print("NGINX_E2E_FIGURES " + json.dumps(FIGURES, sort_keys=True), flush=True)

    @classmethod
    def client(cls, address, retries=0):
        return loramux_client.Client(address, timeout=60, retries=retries, initial_backoff=0.1,
                                     stubs=cls.stubs)

    @classmethod
    def lb_health(cls):
        try:
            return cls.lb.health()
        except grpc.RpcError:
            return None

    def cli(self, *args):
        return subprocess.run([os.path.join(ARGS.build_dir, "client", "loramux")] + list(args),
                              capture_output=True, text=True, timeout=120, check=False)

    def resident_on(self, name):
        """Indices of the live replicas that hold `name` on the device (Adapters.Get, direct)."""
        where = []
        for i, direct in enumerate(self.direct):
            if self.replicas[i].alive() and \
                    direct.get(name).residency == self.stubs.pb2.DEVICE:
                where.append(i)
        return where

    # --- 1 -----------------------------------------------------------------------------------
    def test_1_health_through_nginx(self):
        out = self.cli("--server", self.nginx.address, "health")
        self.assertEqual((out.returncode, out.stdout), (0, "SERVING\n"), out.stderr)
        out = self.cli("--server", self.nginx.address, "--json", "health")
        self.assertEqual(json.loads(out.stdout), {"status": "SERVING"})
        self.assertEqual(self.lb.health(), "SERVING")
        # The Python CLI on the same library: health, and exit 3 when nothing answers.
        python_cli = [sys.executable, os.path.join(REPO, "client", "python", "loramux_cli.py"),
                      "--stubs_dir", ARGS.stubs_dir]
        out = subprocess.run(python_cli + ["--server", self.nginx.address, "health"],
                             capture_output=True, text=True, timeout=60, check=False)
        self.assertEqual((out.returncode, out.stdout), (0, "SERVING\n"), out.stderr)
        out = subprocess.run(python_cli + ["--server", "127.0.0.1:%d" % free_port(),
                                           "--retries", "1", "list"],
                             capture_output=True, text=True, timeout=60, check=False)
        self.assertEqual(out.returncode, 3, out.stderr)
        self.assertIn("UNAVAILABLE", out.stderr)

    def test_1_upload_progress_on_a_terminal(self):
        # stdout a terminal (a pseudo-terminal here): `upload` draws its bar with bytes/s.
        main, secondary = pty.openpty()
        cli = subprocess.run([os.path.join(ARGS.build_dir, "client", "loramux"), "--server",
                              self.nginx.address, "upload", "progress",
                              os.path.join(DATA, "adapters", "dora-qkvo-r8")],
                             stdout=secondary, stderr=subprocess.PIPE, timeout=120, check=False)
        os.close(secondary)
        out = b""
        while select.select([main], [], [], 0.5)[0]:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            out += chunk
        os.close(main)
        text = out.decode(errors="replace")
        self.assertEqual(cli.returncode, 0, cli.stderr)
        self.assertRegex(text, r"\rupload progress \[#+\] 100% [0-9.]+ MiB of [0-9.]+ MiB, "
                               r"[0-9.]+ MiB/s")
        self.assertIn("uploaded progress@", text)
        self.lb.delete("progress")

    # --- 2 -----------------------------------------------------------------------------------
    def test_2_read_your_writes(self):
        files = os.path.join(DATA, "adapters")
        info = self.lb.upload("ryw", os.path.join(files, "lora-qv-r8"))
        cases = golden("llama-tiny/lora-qv-r8")
        prompt, tokens = cases[0]
        # At once, through nginx, on the affine replica.
        result = self.lb.generate(prompt, adapter="ryw", max_new_tokens=MAX_NEW_TOKENS)
        self.assertEqual(result.token_ids, tokens)
        self.assertEqual(result.adapter_version, info.version)
        # Through nginx without the affinity header: round-robin over every replica.
        raw = self.lb.generate_request(prompt, adapter="ryw", max_new_tokens=MAX_NEW_TOKENS)
        for _ in range(6):
            got = [t for m in self.lb.inference.Generate(raw, timeout=60) for t in m.token_ids]
            self.assertEqual(got, tokens)
        # And by every replica directly (the shared store).
        for direct in self.direct:
            self.assertEqual(direct.generate(prompt, adapter="ryw",
                                             max_new_tokens=MAX_NEW_TOKENS).token_ids, tokens)
        # Re-upload other weights under the same name through nginx (CLI, JSON output): every
        # replica serves the new version on its next request.
        out = self.cli("--server", self.nginx.address, "--json", "upload", "ryw",
                       os.path.join(files, "dora-qkvo-r8"))
        self.assertEqual(out.returncode, 0, out.stderr)
        new_version = json.loads(out.stdout)["version"]
        self.assertNotEqual(new_version, info.version)
        prompt, tokens = golden("llama-tiny/dora-qkvo-r8")[0]
        for direct in self.direct + [self.lb]:
            result = direct.generate(prompt, adapter="ryw", max_new_tokens=MAX_NEW_TOKENS)
            self.assertEqual((result.token_ids, result.adapter_version), (tokens, new_version))
        for direct in self.direct:  # both versions off every device, for the counts of test 3
            direct.unload("ryw@" + info.version)
            direct.unload("ryw")
        self.lb.delete("ryw")

    # --- 3 -----------------------------------------------------------------------------------
    def test_3_quiet_run_and_affinity(self):
        cls = type(self)
        names = ["task%02d" % i for i in range(NUM_ADAPTERS)]
        cls.names = names
        cls.cases = {}
        upload_dir = os.path.join(self.workdir, "uploads")
        os.makedirs(upload_dir, exist_ok=True)
        loads_before = sum(metric(r.metrics(), "loramux_adapter_loads_total")
                           for r in self.replicas)
        for i, name in enumerate(names):
            source = ADAPTER_FILES[i % len(ADAPTER_FILES)]
            with open(os.path.join(DATA, "adapters", source, "adapter_model.safetensors"),
                      "rb") as f:
                weights = with_metadata(f.read(), name)
            path = os.path.join(upload_dir, name + ".safetensors")
            with open(path, "wb") as f:
                f.write(weights)
            with open(os.path.join(DATA, "adapters", source, "adapter_config.json")) as f:
                config = f.read()
            self.lb.upload(name, config_json=config, weights_path=path)
            cls.cases[name] = golden("llama-tiny/" + source)[:2]
        # The quiet single run: one request at a time, through nginx.
        for name in names:
            for p, (prompt, tokens) in enumerate(self.cases[name]):
                result = self.lb.generate(prompt, adapter=name, max_new_tokens=MAX_NEW_TOKENS)
                self.assertEqual(result.token_ids, tokens, "%s prompt %d" % (name, p))
                cls.expected[(name, p)] = result.token_ids
            prompt = self.cases[name][0][0] + self.cases[name][0][1]
            cls.expected_scores[name] = list(self.lb.score(prompt, adapter=name).token_logprobs)
        # Each adapter resident on exactly one replica: its affine one.
        placement = {}
        for name in names:
            where = self.resident_on(name)
            self.assertEqual(len(where), 1, "%s is resident on replicas %s" % (name, where))
            placement[name] = where[0]
        cls.placement = placement
        per_replica = [sum(1 for r in placement.values() if r == i) for i in range(3)]
        pages = [r.metrics() for r in self.replicas]
        loads = sum(metric(p, "loramux_adapter_loads_total") for p in pages) - loads_before
        self.assertEqual(loads, NUM_ADAPTERS, "each adapter loaded once, on one replica")
        device = [int(metric(p, 'loramux_adapters_resident{tier="device"}')) for p in pages]
        self.assertEqual(device, per_replica, "/metrics' device-resident adapters per replica")
        FIGURES["adapters_per_replica"] = per_replica
        FIGURES["adapter_loads_quiet_run"] = int(loads)

    # --- 4 -----------------------------------------------------------------------------------
    def run_clients(self, rounds, on_progress=None):
        """NUM_CLIENTS threads, client k on adapter k % 16 with its own channel to nginx, each
        running `rounds` x (both prompts + one score) with retries; returns (mismatches,
        errors, retried, requests)."""
        mismatches, errors = [], []
        done = [0]
        lock = threading.Lock()
        clients = [self.client(self.nginx.address, retries=6) for _ in range(NUM_CLIENTS)]

        def work(k):
            name = self.names[k % NUM_ADAPTERS]
            client = clients[k]
            for r in range(rounds):
                for p, (prompt, _) in enumerate(self.cases[name]):
                    try:
                        got = client.generate(prompt, adapter=name,
                                              max_new_tokens=MAX_NEW_TOKENS).token_ids
                        if got != self.expected[(name, p)]:
                            mismatches.append((name, p, got))
                    except grpc.RpcError as e:
                        errors.append((name, p, r, e.code().name, e.details()))
                    with lock:
                        done[0] += 1
                    if on_progress:
                        on_progress(done[0])
                try:
                    prompt = self.cases[name][0][0] + self.cases[name][0][1]
                    scores = list(client.score(prompt, adapter=name).token_logprobs)
                    want = self.expected_scores[name]
                    if len(scores) != len(want) or \
                            max(abs(a - b) for a, b in zip(scores, want)) > 1e-4:
                        mismatches.append((name, "score", scores))
                except grpc.RpcError as e:
                    errors.append((name, "score", r, e.code().name, e.details()))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(NUM_CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        self.assertFalse(any(t.is_alive() for t in threads), "clients still running after 600 s")
        retried = sum(c.retried for c in clients)
        for c in clients:
            c.close()
        return mismatches, errors, retried, done[0]

    def test_4_concurrent_clients(self):
        loads_before = [metric(r.metrics(), "loramux_adapter_loads_total") for r in self.replicas]
        mismatches, errors, retried, requests = self.run_clients(rounds=1)
        self.assertEqual(errors, [])
        self.assertEqual(mismatches, [])
        loads_after = [metric(r.metrics(), "loramux_adapter_loads_total") for r in self.replicas]
        self.assertEqual(loads_after, loads_before, "no adapter loaded on a second replica")
        for name in self.names:
            self.assertEqual(self.resident_on(name), [self.placement[name]], name)
        FIGURES["concurrent_generates"] = requests
        FIGURES["concurrent_retries"] = retried

    # --- 5 -----------------------------------------------------------------------------------
    def test_5_replica_killed_mid_run(self):
        victim = max(range(3), key=lambda i: sum(1 for r in self.placement.values() if r == i))
        killed_at = []

        def on_progress(done):
            if done >= NUM_CLIENTS and not killed_at:
                killed_at.append(time.monotonic())
                self.replicas[victim].kill()

        start = time.monotonic()
        mismatches, errors, retried, requests = self.run_clients(rounds=3,
                                                                 on_progress=on_progress)
        self.assertTrue(killed_at, "the replica was not killed")
        self.assertEqual(errors, [], "requests that failed even after their retries")
        self.assertEqual(mismatches, [], "wrong output after the failover")
        moved = [n for n, r in self.placement.items() if r == victim]
        survivors = [i for i in range(3) if i != victim]
        for name in moved:
            self.assertEqual(len(self.resident_on(name)), 1, name)
        FIGURES["failover"] = {
            "killed_replica_adapters": len(moved), "generates": requests,
            "retried_calls": retried, "failed_after_retries": len(errors),
            "wrong_outputs": len(mismatches),
            "seconds_kill_to_all_done": round(time.monotonic() - killed_at[0], 2),
            "seconds_total": round(time.monotonic() - start, 2),
            "surviving_replicas": survivors}
        # Requests for the dead replica's adapters keep succeeding through nginx.
        for name in moved:
            result = self.lb.generate(self.cases[name][0][0], adapter=name,
                                      max_new_tokens=MAX_NEW_TOKENS)
            self.assertEqual(result.token_ids, self.expected[(name, 0)])


def main():
    global ARGS  # pylint: disable=global-statement
    parser = argparse.ArgumentParser()
    parser.add_argument("--build_dir", required=True)
    parser.add_argument("--stubs_dir", help="default: BUILD/client/python")
    ARGS, rest = parser.parse_known_args()
    ARGS.stubs_dir = ARGS.stubs_dir or os.path.join(ARGS.build_dir, "client", "python")
    if shutil.which("nginx") is None:
        sys.exit("nginx_e2e_test: nginx is missing; run ./scripts/install_deps.sh")
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
