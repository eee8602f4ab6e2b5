"""The GitHub Actions workflows keep the policies a maintainer relies on.

``violations()`` checks one parsed workflow; it is run on every file in
``.github/workflows/``, and on mutated copies of them to show that each rule catches the
mistake it is there for:

- every ``uses:`` is a local path or pinned to a full 40-hex commit SHA, with the release
  as a trailing ``# vX.Y.Z`` comment (comments do not survive YAML parsing, so the pins
  are read from the text);
- the top-level ``permissions`` are ``{}`` or ``contents: read``; anything more is granted
  per job, and only the PyPI upload job (behind the ``pypi`` environment) and the Pages
  deploy job may mint an OIDC token;
- every job that runs steps has ``timeout-minutes``; every workflow has a ``concurrency``
  group; every ``actions/checkout`` sets ``persist-credentials: false``;
- publish.yml runs on published releases only, and uploads from a job with an environment;
- tests.yml runs CPython 3.10 to 3.13 on Linux;
- wheels.yml's artifact count uses the cibuildwheel release its action pins (dependabot
  updates the action, not the ``pip install`` line).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS_DIR = ROOT / ".github" / "workflows"
# Outside the source tree (scripts/wheels) there are no workflows: the parameter lists are
# empty and the tests, all marked source_tree, are deselected there.
WORKFLOW_FILES = sorted(WORKFLOWS_DIR.glob("*.yml")) if WORKFLOWS_DIR.is_dir() else []

_SHA = re.compile(r"[0-9a-f]{40}")
_VERSION_COMMENT = re.compile(r"v\d+(\.\d+){0,2}")
_USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>[^\s#]+)\s*(?:#\s*(?P<comment>.*?)\s*)?$")
_LINUX_PYTHONS = {"3.10", "3.11", "3.12", "3.13"}
# Jobs allowed to hold `id-token: write`: the action that needs the token -> the
# environment the job must run in.
_OIDC_USERS = {
    "pypa/gh-action-pypi-publish": "pypi",
    "actions/deploy-pages": "github-pages",
}


@dataclass
class Workflow:
    name: str
    doc: dict[Any, Any]
    # every `uses:` line of the text: the reference and its trailing comment (or None)
    pins: list[tuple[str, str | None]] = field(default_factory=list)


def load(path: Path) -> Workflow:
    text = path.read_text(encoding="utf-8")
    pins = []
    for line in text.splitlines():
        match = _USES_LINE.match(line)
        if match:
            ref = match.group("ref").strip("'\"")
            pins.append((ref, match.group("comment")))
    return Workflow(path.name, yaml.safe_load(text), pins)


def _triggers(doc: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as the boolean True
    raw = doc.get("on", doc.get(True))
    if isinstance(raw, str):
        return {raw: None}
    if isinstance(raw, list):
        return dict.fromkeys(raw)
    return dict(raw or {})


def _steps(job: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from job.get("steps") or []


def _action(uses: str) -> str:
    """``owner/repo/path@ref`` -> ``owner/repo``."""
    return "/".join(uses.split("@", 1)[0].split("/")[:2])


def _job_actions(job: dict[str, Any]) -> set[str]:
    return {_action(step["uses"]) for step in _steps(job) if "uses" in step}


def _all_uses(doc: dict[Any, Any]) -> Iterator[str]:
    for job in (doc.get("jobs") or {}).values():
        if "uses" in job:
            yield job["uses"]
        for step in _steps(job):
            if "uses" in step:
                yield step["uses"]


def _environment_name(job: dict[str, Any]) -> str | None:
    env = job.get("environment")
    if isinstance(env, dict):
        env = env.get("name")
    return env if isinstance(env, str) else None


def _pin_violations(wf: Workflow) -> list[str]:
    found = []
    commented = {ref for ref, _ in wf.pins}
    for uses in _all_uses(wf.doc):
        if uses not in commented:
            found.append(f"uses: {uses} not found on a line of its own")
    for ref, comment in wf.pins:
        if ref.startswith("./"):
            continue  # a reusable workflow or action of this repository, same commit
        sha = ref.partition("@")[2]
        if ref.startswith("docker://") or not _SHA.fullmatch(sha):
            found.append(f"uses: {ref} is not pinned to a full commit SHA")
        elif comment is None or not _VERSION_COMMENT.fullmatch(comment):
            found.append(f"uses: {ref} has no version comment (# vX.Y.Z), got {comment!r}")
    return found


def violations(wf: Workflow) -> list[str]:
    """Every policy the workflow breaks, one line each; empty when it keeps them all."""
    doc = wf.doc
    found = _pin_violations(wf)

    top = doc.get("permissions")
    if top not in ({}, {"contents": "read"}):
        found.append(f"top-level permissions must be {{}} or contents: read, not {top!r}")
    if not doc.get("concurrency"):
        found.append("no concurrency group")

    jobs: dict[str, dict[str, Any]] = doc.get("jobs") or {}
    for job_id, job in jobs.items():
        # A job that calls a reusable workflow cannot have a timeout; its jobs have theirs.
        if "uses" not in job and "timeout-minutes" not in job:
            found.append(f"job {job_id}: no timeout-minutes")
        for step in _steps(job):
            if "uses" in step and _action(step["uses"]) == "actions/checkout":
                if (step.get("with") or {}).get("persist-credentials") is not False:
                    found.append(f"job {job_id}: checkout without persist-credentials: false")
        perms = job.get("permissions") or {}
        if not isinstance(perms, dict):
            found.append(f"job {job_id}: permissions {perms!r} (name each one)")
            continue
        if perms.get("id-token") == "write":
            users = _job_actions(job) & set(_OIDC_USERS)
            if not users:
                found.append(f"job {job_id}: id-token: write, but it publishes nothing")
            for user in users:
                want = _OIDC_USERS[user]
                if _environment_name(job) != want:
                    found.append(f"job {job_id}: uses {user} outside the {want!r} environment")
        elif _job_actions(job) & set(_OIDC_USERS):
            found.append(f"job {job_id}: publishes without id-token: write")

    if wf.name == "publish.yml":
        triggers = _triggers(doc)
        if set(triggers) != {"release"} or (triggers["release"] or {}).get("types") != [
            "published"
        ]:
            found.append(f"publish.yml must run on published releases only, not {triggers!r}")
        publishers = [
            job_id
            for job_id, job in jobs.items()
            if "pypa/gh-action-pypi-publish" in _job_actions(job)
        ]
        if len(publishers) != 1:
            found.append(f"publish.yml: {len(publishers)} jobs upload to PyPI, expected one")

    if wf.name == "wheels.yml":
        found += _cibuildwheel_in_step(wf)

    if wf.name == "tests.yml" and not any(
        _LINUX_PYTHONS <= _linux_pythons(job) for job in jobs.values()
    ):
        found.append(f"tests.yml: no Linux job runs CPython {sorted(_LINUX_PYTHONS)}")
    return found


def _cibuildwheel_in_step(wf: Workflow) -> list[str]:
    """The count job's `pip install cibuildwheel==X` must be the release the action pins."""
    action = {c for ref, c in wf.pins if _action(ref) == "pypa/cibuildwheel"}
    scripts = " ".join(
        step.get("run", "") for job in wf.doc["jobs"].values() for step in _steps(job)
    )
    installed = set(re.findall(r"cibuildwheel==([\w.]+)", scripts))
    if not action or not installed or {f"v{v}" for v in installed} != action:
        return [f"cibuildwheel: the action pins {action}, a step installs {installed}"]
    return []


def _linux_pythons(job: dict[str, Any]) -> set[str]:
    """The CPython versions of a job's matrix, if it runs on Linux."""
    if not str(job.get("runs-on", "")).startswith("ubuntu"):
        return set()
    matrix = (job.get("strategy") or {}).get("matrix") or {}
    return {str(version) for version in matrix.get("python", [])}


# ---------------------------------------------------------------------------- the files


@pytest.mark.source_tree
def test_the_workflows_are_there() -> None:
    names = {path.name for path in WORKFLOW_FILES}
    assert {"tests.yml", "wheels.yml", "publish.yml", "docs.yml"} <= names


@pytest.mark.source_tree
@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_keeps_the_policies(path: Path) -> None:
    wf = load(path)
    assert wf.pins, "no uses: lines found"
    assert violations(wf) == []


@pytest.mark.source_tree
def test_one_release_per_action() -> None:
    """The same action at two SHAs, or one SHA called two releases, is a stale pin."""
    seen: dict[str, set[tuple[str, str | None]]] = {}
    for path in WORKFLOW_FILES:
        for ref, comment in load(path).pins:
            if not ref.startswith("./"):
                name, _, sha = ref.partition("@")
                seen.setdefault(name, set()).add((sha, comment))
    assert seen
    assert {name: pins for name, pins in seen.items() if len(pins) > 1} == {}


# ---------------------------------------------------------------------------- the checker


def _by_name(name: str) -> Workflow:
    path = WORKFLOWS_DIR / name
    return load(path)


def _first_step(wf: Workflow, action: str) -> dict[str, Any]:
    for job in wf.doc["jobs"].values():
        for step in _steps(job):
            if "uses" in step and _action(step["uses"]) == action:
                return step
    raise AssertionError(f"{wf.name} does not use {action}")


def _job_with(wf: Workflow, action: str) -> dict[str, Any]:
    for job in wf.doc["jobs"].values():
        if action in _job_actions(job):
            return job
    raise AssertionError(f"{wf.name} has no job using {action}")


def _repin(wf: Workflow, action: str, new_ref: str, comment: str | None) -> None:
    """Point the first use of ACTION at NEW_REF, in the document and in the text's pins."""
    step = _first_step(wf, action)
    old = step["uses"]
    step["uses"] = new_ref
    index = next(i for i, (ref, _) in enumerate(wf.pins) if ref == old)
    wf.pins[index] = (new_ref, comment)


def _tag_pin(wf: Workflow) -> None:
    _repin(wf, "actions/checkout", "actions/checkout@v5", "v5.0.0")


def _short_sha(wf: Workflow) -> None:
    _repin(wf, "actions/checkout", "actions/checkout@08c6903", "v5.0.0")


def _branch_pin(wf: Workflow) -> None:
    _repin(wf, "pypa/gh-action-pypi-publish", "pypa/gh-action-pypi-publish@release/v1", None)


def _no_comment(wf: Workflow) -> None:
    ref, _ = wf.pins[0]
    wf.pins[0] = (ref, None)


def _comment_not_a_version(wf: Workflow) -> None:
    ref, _ = wf.pins[0]
    wf.pins[0] = (ref, "main")


def _docker_uses(wf: Workflow) -> None:
    _repin(wf, "actions/checkout", "docker://alpine:3", None)


def _write_all(wf: Workflow) -> None:
    wf.doc["permissions"] = "write-all"


def _contents_write(wf: Workflow) -> None:
    wf.doc["permissions"] = {"contents": "write"}


def _no_top_permissions(wf: Workflow) -> None:
    del wf.doc["permissions"]


def _oidc_at_top(wf: Workflow) -> None:
    wf.doc["permissions"] = {"id-token": "write"}


def _no_timeout(wf: Workflow) -> None:
    del next(iter(wf.doc["jobs"].values()))["timeout-minutes"]


def _no_concurrency(wf: Workflow) -> None:
    del wf.doc["concurrency"]


def _credentials_kept(wf: Workflow) -> None:
    del _first_step(wf, "actions/checkout")["with"]["persist-credentials"]


def _credentials_true(wf: Workflow) -> None:
    _first_step(wf, "actions/checkout")["with"]["persist-credentials"] = True


def _publish_without_environment(wf: Workflow) -> None:
    del _job_with(wf, "pypa/gh-action-pypi-publish")["environment"]


def _publish_in_other_environment(wf: Workflow) -> None:
    _job_with(wf, "pypa/gh-action-pypi-publish")["environment"] = "staging"


def _oidc_on_build_job(wf: Workflow) -> None:
    wf.doc["jobs"]["sdist"]["permissions"] = {"contents": "read", "id-token": "write"}


def _publish_without_oidc(wf: Workflow) -> None:
    _job_with(wf, "pypa/gh-action-pypi-publish")["permissions"] = {"contents": "read"}


def _publish_on_push(wf: Workflow) -> None:
    wf.doc[True]["push"] = {"branches": ["main"]}


def _two_publishers(wf: Workflow) -> None:
    jobs = wf.doc["jobs"]
    jobs["testpypi"] = copy.deepcopy(_job_with(wf, "pypa/gh-action-pypi-publish"))


def _deploy_without_environment(wf: Workflow) -> None:
    del _job_with(wf, "actions/deploy-pages")["environment"]


def _cibuildwheel_versions_apart(wf: Workflow) -> None:
    step = next(s for s in _steps(wf.doc["jobs"]["count"]) if "cibuildwheel==" in s.get("run", ""))
    step["run"] = re.sub(r"cibuildwheel==[\w.]+", "cibuildwheel==3.1.4", step["run"])


def _matrix_without_313(wf: Workflow) -> None:
    for job in wf.doc["jobs"].values():
        python = ((job.get("strategy") or {}).get("matrix") or {}).get("python")
        if python:
            python[:] = [v for v in python if v != "3.13"]


def _linux_job_on_macos(wf: Workflow) -> None:
    wf.doc["jobs"]["test"]["runs-on"] = "macos-14"


MUTATIONS: list[tuple[str, Callable[[Workflow], None], str]] = [
    ("tests.yml", _tag_pin, "not pinned to a full commit SHA"),
    ("tests.yml", _short_sha, "not pinned to a full commit SHA"),
    ("publish.yml", _branch_pin, "not pinned to a full commit SHA"),
    ("tests.yml", _docker_uses, "not pinned to a full commit SHA"),
    ("wheels.yml", _no_comment, "has no version comment"),
    ("docs.yml", _comment_not_a_version, "has no version comment"),
    ("tests.yml", _write_all, "top-level permissions"),
    ("docs.yml", _contents_write, "top-level permissions"),
    ("wheels.yml", _no_top_permissions, "top-level permissions"),
    ("publish.yml", _oidc_at_top, "top-level permissions"),
    ("tests.yml", _no_timeout, "no timeout-minutes"),
    ("docs.yml", _no_concurrency, "no concurrency group"),
    ("tests.yml", _credentials_kept, "persist-credentials: false"),
    ("wheels.yml", _credentials_true, "persist-credentials: false"),
    ("publish.yml", _publish_without_environment, "outside the 'pypi' environment"),
    ("publish.yml", _publish_in_other_environment, "outside the 'pypi' environment"),
    ("wheels.yml", _oidc_on_build_job, "id-token: write, but it publishes nothing"),
    ("docs.yml", _deploy_without_environment, "outside the 'github-pages' environment"),
    ("publish.yml", _publish_without_oidc, "publishes without id-token: write"),
    ("publish.yml", _publish_on_push, "published releases only"),
    ("publish.yml", _two_publishers, "2 jobs upload to PyPI"),
    ("wheels.yml", _cibuildwheel_versions_apart, "cibuildwheel: the action pins"),
    ("tests.yml", _matrix_without_313, "no Linux job runs CPython"),
    ("tests.yml", _linux_job_on_macos, "no Linux job runs CPython"),
]


@pytest.mark.source_tree
@pytest.mark.parametrize(
    ("name", "mutate", "message"), MUTATIONS, ids=[m[1].__name__.strip("_") for m in MUTATIONS]
)
def test_the_checker_catches(name: str, mutate: Callable[[Workflow], None], message: str) -> None:
    wf = _by_name(name)
    assert violations(wf) == []  # the real file passes; only the mutation can fail it
    mutate(wf)
    found = violations(wf)
    assert any(message in line for line in found), found


@pytest.mark.source_tree
def test_pins_are_read_from_the_text(tmp_path: Path) -> None:
    path = tmp_path / "wf.yml"
    path.write_text(
        "on: push\n"
        "permissions: {}\n"
        "concurrency: x\n"
        "jobs:\n"
        "  a:\n"
        "    runs-on: ubuntu-24.04\n"
        "    timeout-minutes: 5\n"
        "    steps:\n"
        f"      - uses: actions/setup-python@{'a' * 40} # v6.0.0\n"
        f"      - uses: 'actions/cache@{'b' * 40}'\n",
        encoding="utf-8",
    )
    wf = load(path)
    assert wf.pins == [
        (f"actions/setup-python@{'a' * 40}", "v6.0.0"),
        (f"actions/cache@{'b' * 40}", None),
    ]
    assert violations(wf) == [
        f"uses: actions/cache@{'b' * 40} has no version comment (# vX.Y.Z), got None"
    ]
