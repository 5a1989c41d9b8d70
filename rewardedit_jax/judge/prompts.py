"""The judge's prompts: versioned text files in package data, rendered into chat-completion messages.

The prompts are this project's own, written to follow the paper's protocol (section 3.1 and the Real-Edit
evaluation): one request per perspective; *instruction following* and *detail preserving* see the source and
the edited image with the instruction, *generation quality* sees the edited image alone. In label mode the
model answers `{"score": 0..5, "feedback": "<failure points or None>"}`; in eval mode
`{"answer": "yes"|"no", "score": 0..5}`.

A prompt version is a directory `prompts/<version>/` holding `system.txt` and `<mode>_<perspective>.txt`;
`$instruction` in a template is replaced by the edit instruction. The version name is part of every cache key,
so a packaged version must never change once released: `PACKAGED_DIGESTS` pins the content of each one and
loading refuses a packaged version whose files changed. A user directory (`JudgeConfig.prompts = "/path/dir"`)
gets the version `<dir name>-<content digest>`, so editing it never returns stale cached answers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import string
from pathlib import Path

from rewardedit_jax.judge.config import MODES, PERSPECTIVES

# Which images each perspective sends, in message order.
PERSPECTIVE_IMAGES: dict[str, tuple[str, ...]] = {
    "following": ("source", "edited"),
    "preserving": ("source", "edited"),
    "quality": ("edited",),
}

# sha256 over the sorted (file name, content) pairs of each packaged version; see `_digest`.
PACKAGED_DIGESTS: dict[str, str] = {
    "v1": "25f8140b5ebd1fa59e8bb177e5c612a0c2a0616d91f0eb0df4ceb1dad54144b5",
}

_FILE_NAMES: tuple[str, ...] = ("system.txt",) + tuple(f"{m}_{p}.txt" for m in MODES for p in PERSPECTIVES)


def _json_schema(mode: str) -> dict:
    """The structured-output schema of an answer (ranges are checked by the parser, not the schema)."""
    if mode == "label":
        properties = {"score": {"type": "integer"}, "feedback": {"type": "string"}}
        required = ["score", "feedback"]
    else:
        properties = {"answer": {"type": "string", "enum": ["yes", "no"]}, "score": {"type": "number"}}
        required = ["answer", "score"]
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _uses_instruction(text: str) -> bool:
    return "$instruction" in text or "${instruction}" in text


def _digest(files: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode())
        h.update(b"\0")
        h.update(files[name].encode())
        h.update(b"\0")
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class PromptSet:
    """One version of the prompts: the system text and one template per (mode, perspective)."""

    version: str
    digest: str
    system: str
    templates: dict[tuple[str, str], string.Template]

    @classmethod
    def load(cls, spec: str) -> PromptSet:
        """`spec` is a packaged version name ("v1") or a directory with the same file layout."""
        path = Path(spec)
        if spec in PACKAGED_DIGESTS:
            root = importlib.resources.files("rewardedit_jax.judge") / "prompts" / spec
            files = {name: (root / name).read_text(encoding="utf-8") for name in _FILE_NAMES}
            version = spec
        elif path.is_dir():
            missing = [name for name in _FILE_NAMES if not (path / name).is_file()]
            if missing:
                raise FileNotFoundError(f"prompt directory {path} lacks {', '.join(missing)}")
            files = {name: (path / name).read_text(encoding="utf-8") for name in _FILE_NAMES}
            version = None
        else:
            known = ", ".join(sorted(PACKAGED_DIGESTS))
            raise ValueError(f"unknown prompt version {spec!r} (packaged: {known}; or give a directory)")
        digest = _digest(files)
        if version is not None and digest != PACKAGED_DIGESTS[version]:
            raise RuntimeError(
                f"the packaged prompts {version} were modified; cached answers would be mislabelled. "
                "Put changed prompts in a new version directory (and PACKAGED_DIGESTS)."
            )
        if version is None:
            version = f"{path.resolve().name}-{digest[:12]}"
        templates = {}
        for mode in MODES:
            for perspective in PERSPECTIVES:
                text = files[f"{mode}_{perspective}.txt"].strip()
                template = string.Template(text)
                if not _uses_instruction(text) and perspective != "quality":
                    raise ValueError(f"prompt {mode}_{perspective}.txt must contain $instruction")
                templates[(mode, perspective)] = template
        return cls(version=version, digest=digest, system=files["system.txt"].strip(), templates=templates)

    def prompt_sha256(self, mode: str, perspective: str) -> str:
        """sha256 of one request's prompts: the system text and the template, NUL-separated."""
        blob = self.system + "\0" + self.templates[(mode, perspective)].template
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def system_text(self, mode: str, perspective: str) -> str:
        """The system text of a request (one for all requests of a version)."""
        return self.system

    def uses_instruction(self, mode: str, perspective: str) -> bool:
        return _uses_instruction(self.templates[(mode, perspective)].template)

    def render(self, mode: str, perspective: str, instruction: str) -> str:
        """The user text of one request; the instruction is inserted verbatim (whitespace collapsed)."""
        instruction = " ".join(instruction.split())
        return self.templates[(mode, perspective)].substitute(instruction=instruction)

    def messages(self, mode: str, perspective: str, instruction: str, image_urls: list[str], detail: str):
        """Chat-completion messages: system text, then the user text followed by the images in order."""
        content: list[dict] = [{"type": "text", "text": self.render(mode, perspective, instruction)}]
        for url in image_urls:
            content.append({"type": "image_url", "image_url": {"url": url, "detail": detail}})
        return [{"role": "system", "content": self.system}, {"role": "user", "content": content}]

    def response_format(self, mode: str, kind: str) -> dict | None:
        """The `response_format` request field for `kind` in json_schema / json_object / none."""
        if kind == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {"name": f"{mode}_judgment", "strict": True, "schema": _json_schema(mode)},
            }
        if kind == "json_object":
            return {"type": "json_object"}
        return None
