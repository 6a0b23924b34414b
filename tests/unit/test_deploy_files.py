"""The deployment files (Dockerfile, compose.yaml, deploy/kubernetes/) cannot be built or applied here, so this keeps
them from drifting: every role runs exactly the Procfile's line for it, and every variable they name is a setting
(app/settings.py), a variable of the local run (the README's table), a simulator setting (COMFYSIM_*), or one of
compose's own host-side variables, documented beside it and in the README."""
from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Iterator

import yaml

import comfysim.settings
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PROCFILE = ROOT / "Procfile"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
KUBERNETES = ROOT / "deploy" / "kubernetes"
README = ROOT / "README.md"

SHELL = ["bash", "-c"]  # every container runs its role's Procfile line as SHELL + [line]
IMAGE = "text2img-queue"  # the Dockerfile's image, under any registry and tag in Kubernetes
# Read by compose itself on the host (`${NAME:-default}` in compose.yaml), never by a container.
COMPOSE_ONLY = {"GPU0_COMFYUI_URL", "GPU1_COMFYUI_URL"}
KUBERNETES_ROLES = {"web", "flower", "reaper", "gpu0"}  # the example shows one GPU; no simulators
INTERPOLATION = re.compile(r"(?<!\$)\$\{?([A-Za-z_][A-Za-z0-9_]*)")  # compose's ${X}, not its escaped $${X}


# Reading the files -------------------------------------------------------------------------------------------

def procfile(text: str) -> dict[str, str]:
    """role -> command line."""
    roles = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            role, command = line.split(":", 1)
            roles[role.strip()] = command.strip()
    return roles


def compose_file() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def kubernetes_documents() -> list[dict[str, Any]]:
    return [document for path in sorted(KUBERNETES.glob("*.yaml"))
            for document in yaml.safe_load_all(path.read_text()) if document]


def project_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from the Dockerfile (Redis is the official image)."""
    return {name: service for name, service in compose["services"].items() if "build" in service}


def compose_commands(compose: dict[str, Any]) -> dict[str, list[str]]:
    """service -> command as the container gets it ($$ is compose's escape for a literal $)."""
    return {name: [part.replace("$$", "$") for part in service.get("command", [])]
            for name, service in project_services(compose).items()}


def pods(documents: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(Deployment, its pod spec)."""
    for document in documents:
        if document["kind"] == "Deployment":
            yield document, document["spec"]["template"]["spec"]


def project_containers(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [container for _, spec in pods(documents) for container in spec["containers"]
            if container["image"].rsplit("/", 1)[-1].split(":")[0] == IMAGE]


def kubernetes_commands(documents: list[dict[str, Any]]) -> dict[str, list[str]]:
    """container name (its role) -> command."""
    containers = project_containers(documents)
    assert len({container["name"] for container in containers}) == len(containers), "two containers share a name"
    return {container["name"]: container.get("command", []) for container in containers}


def environment(service: dict[str, Any]) -> dict[str, Any]:
    """A compose service's environment, in either of compose's forms."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in joined.splitlines() if line.strip()]


def dockerfile_variables(text: str) -> set[str]:
    names = set()
    for instruction, arguments in dockerfile_instructions(text):
        if instruction == "ARG":
            names.add(arguments.split("=", 1)[0].strip())
        elif instruction == "ENV":
            names.update(re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", arguments) or [arguments.split()[0]])
    return names


def local_run_variables() -> set[str]:
    """The README's "Variables of the local run only" table."""
    section = README.read_text().split("### Variables of the local run only", 1)[1].split("\n## ", 1)[0]
    return {name for row in section.splitlines() if row.startswith("| `")
            for name in re.findall(r"`([A-Z_]+)`", row.split("|")[1])}


def known_variables() -> set[str]:
    """What a container may be given: the settings, the local run's variables, the simulator's settings."""
    return ({setting.name.upper() for setting in dataclasses.fields(Settings)} | local_run_variables()
            | {f"COMFYSIM_{setting.name.upper()}" for setting in dataclasses.fields(comfysim.settings.Settings)})


# The checks, as functions of what was read (so that the last test can feed them altered copies) ----------------

def command_drift(roles: dict[str, str], commands: dict[str, list[str]]) -> list[str]:
    problems = []
    for name, command in sorted(commands.items()):
        if name not in roles:
            problems.append(f"{name}: the Procfile has no such role")
        elif command != [*SHELL, roles[name]]:
            problems.append(f"{name}: runs {command!r}; the Procfile's line is {roles[name]!r}")
    return problems


def compose_variables(compose: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(names given to containers, names compose itself reads on the host)."""
    given = {name for service in compose["services"].values() if "build" in service for name in environment(service)}
    interpolated = {name for text in strings(compose) for name in INTERPOLATION.findall(text)}
    return given, interpolated


def kubernetes_variables(documents: list[dict[str, Any]]) -> set[str]:
    names = {name for document in documents if document["kind"] == "ConfigMap" for name in document.get("data", {})}
    return names | {variable["name"] for container in project_containers(documents)
                    for variable in container.get("env", [])}


def unknown(names: set[str]) -> set[str]:
    return names - known_variables()


# The tests ---------------------------------------------------------------------------------------------------

def test_compose_runs_every_role_of_the_procfile_with_its_exact_line():
    roles = procfile(PROCFILE.read_text())
    commands = compose_commands(compose_file())
    assert command_drift(roles, commands) == []
    assert set(commands) == set(roles) - {"redis"}  # Redis: the official image instead (below)


def test_kubernetes_runs_the_procfile_lines_of_the_roles_it_shows():
    roles = procfile(PROCFILE.read_text())
    commands = kubernetes_commands(kubernetes_documents())
    assert command_drift(roles, commands) == []
    assert set(commands) == KUBERNETES_ROLES
    # The kubelet expands $(NAME) in a command: the lines must not contain it.
    assert not [line for role, line in roles.items() if role in KUBERNETES_ROLES and "$(" in line]


def test_the_image_installs_the_pinned_requirements_and_the_project_as_make_install_does():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = [arguments for instruction, arguments in instructions if instruction == "RUN"]
    requirements = [run for run in runs if re.search(r"pip install .*-r requirements\.txt", run)]
    project = [run for run in runs if re.search(r"pip install .*--no-deps --editable \.(\s|$)", run)]
    assert requirements and project
    makefile = (ROOT / "Makefile").read_text()
    assert "-r requirements.txt" in makefile and "--no-deps --editable ." in makefile
    assert ("COPY", "requirements.txt ./") in instructions
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    cmd = [arguments for instruction, arguments in instructions if instruction == "CMD"][-1]
    assert command_drift(procfile(PROCFILE.read_text()), {"web": json.loads(cmd)}) == []


def test_every_variable_named_is_a_setting_or_documented():
    given, interpolated = compose_variables(compose_file())
    assert unknown(given) == set()
    assert unknown(kubernetes_variables(kubernetes_documents())) == set()
    assert unknown(dockerfile_variables(DOCKERFILE.read_text())) == set()
    # compose's own variables: exactly those listed, each explained in compose.yaml and in the README.
    assert interpolated == COMPOSE_ONLY
    section = README.read_text().split("### Deployment files", 1)[1].split("\n## ", 1)[0]
    comments = "\n".join(line for line in COMPOSE.read_text().splitlines() if line.lstrip().startswith("#"))
    for name in COMPOSE_ONLY:
        assert name in section and name in comments, name


def test_compose_runs_redis_with_an_append_only_file_and_every_role_reaches_it():
    compose = compose_file()
    redis = compose["services"]["redis"]
    assert redis["image"].split(":")[0] == "redis" and redis["image"].split(":")[1].startswith("7")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    for name, service in project_services(compose).items():
        assert environment(service)["REDIS_URL"] == "redis://redis:6379/0", name


def test_compose_services_listen_where_the_others_reach_them():
    services = project_services(compose_file())
    assert environment(services["web"])["WEB_HOST"] == "0.0.0.0"
    assert environment(services["flower"])["FLOWER_HOST"] == "0.0.0.0"
    roles = procfile(PROCFILE.read_text())
    for gpu in (role for role in roles if role.startswith("gpu")):
        assert environment(services[gpu])["COMFYUI_URL"] and environment(services[gpu])["METRICS_HOST"] == "0.0.0.0"
    simulators = {name for name, service in services.items() if service.get("profiles")}
    assert simulators == {role for role in roles if role.startswith("sim")}
    for name in simulators:
        assert services[name]["profiles"] == ["simulators"]
        assert environment(services[name])["COMFYSIM_HOST"] == "0.0.0.0"


def test_kubernetes_gives_each_gpu_worker_one_gpu_and_every_container_the_shared_settings():
    documents = kubernetes_documents()
    configmaps = {document["metadata"]["name"]: document["data"] for document in documents
                  if document["kind"] == "ConfigMap"}
    for container in project_containers(documents):
        sources = [source["configMapRef"]["name"] for source in container.get("envFrom", [])
                   if "configMapRef" in source]
        assert any("REDIS_URL" in configmaps.get(name, {}) for name in sources), container["name"]
    for deployment, spec in pods(documents):
        roles = {container["name"] for container in spec["containers"]}
        if any(role.startswith("gpu") for role in roles):
            assert deployment["spec"]["replicas"] == 1
            gpus = [container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
                    for container in spec["containers"]]
            assert [gpu for gpu in gpus if gpu] in ([1], ["1"])
            worker = next(container for container in spec["containers"] if container["name"].startswith("gpu"))
            env = {variable["name"]: variable.get("value") for variable in worker.get("env", [])}
            assert env.get("COMFYUI_URL") and env.get("METRICS_HOST") == "0.0.0.0"


def test_the_checks_fail_when_a_file_drifts():
    """Altered copies, in memory: a changed command, a Procfile line changed under the files, a renamed setting."""
    roles = procfile(PROCFILE.read_text())
    compose = compose_file()
    assert command_drift(roles, compose_commands(compose)) == []

    changed = copy.deepcopy(compose)
    changed["services"]["gpu0"]["command"][-1] = changed["services"]["gpu0"]["command"][-1].replace("9100", "9102")
    assert [problem.split(":")[0] for problem in command_drift(roles, compose_commands(changed))] == ["gpu0"]

    procfile_changed = procfile(PROCFILE.read_text().replace("--step-seconds", "--load-seconds 1 --step-seconds"))
    assert {problem.split(":")[0] for problem in command_drift(procfile_changed, compose_commands(compose))} == \
        {"sim0", "sim1"}

    unescaped = copy.deepcopy(compose)  # a $ left for compose to expand on the host, not in the container
    unescaped["services"]["flower"]["command"][-1] = unescaped["services"]["flower"]["command"][-1].replace("$$", "$")
    assert compose_variables(unescaped)[1] - COMPOSE_ONLY == {"FLOWER_UNAUTHENTICATED_API", "FLOWER_HOST",
                                                              "FLOWER_PORT"}

    renamed = copy.deepcopy(compose)
    env = renamed["services"]["web"]["environment"]
    env["REDIS_URI"] = env.pop("REDIS_URL")
    assert unknown(compose_variables(renamed)[0]) == {"REDIS_URI"}
    assert unknown({"WEB_HOST", "COMFYSIM_HOST", "SIM_STEP_SECONDS", "COMFYSIM_BIND"}) == {"COMFYSIM_BIND"}

    documents = copy.deepcopy(kubernetes_documents())
    worker = next(container for container in project_containers(documents) if container["name"] == "gpu0")
    worker["command"] = ["sh", "-c", roles["gpu0"]]
    assert command_drift(roles, kubernetes_commands(documents)) != []
