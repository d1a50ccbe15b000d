"""Schemathesis against a dcos-rs master: every operation of docs/openapi.json, a bounded number
of generated requests each, checked for server errors, undocumented status codes and content
types, and response bodies that do not match the document; plus our own check that a refused
write (4xx to POST/PUT/PATCH/DELETE) left the cluster as it was (GET /v2/apps and GET
/v2/deployments JSON-equal before and after).

Usage: schemathesis_master.py <master-url> <token> [max-examples-per-operation]   (default 25)

Needs `pip install schemathesis` (written against 4.32; its Python API: schemathesis.openapi
.from_path, APIOperation.as_strategy, Case.call / Case.validate_response, @schemathesis.check,
@schemathesis.hook). Each operation runs up to N positive and, where the schema has something
to violate, N negative cases, derandomized (the same cases every run against the same state);
then a few rounds against things that exist (apps, the agent), which random ids rarely name.
Ends with `schemathesis: <N> cases over <M> operations, <F> failures`, each failure printed
with a curl command that repeats it; exits non-zero if there is any. About 25 s for N=25 on
two cores against a debug build.

For a throwaway cluster (`dcos-rs up`): generated writes may reach apps that exist. Safety:
- Generated apps get `instances: 0` (a positive count or none at all in a POST/PUT body becomes
  0; out-of-range values stay, so validation is still exercised): no generated command runs,
  nothing fills memory, and the cluster state only changes through requests (which the
  refusal check relies on). One known app (/schemathesis/probe, `sleep 3600`, 0.1 cpus, one
  port) runs a real task so the task endpoints have something to show, and one can never be
  placed (/schemathesis/waiting) so a deployment stays listed; generated PUTs and DELETEs
  never name them. Every app the run created is removed at the end.
- One job (schemathesis.probe, created through Metronome's API, `echo`, a yearly schedule) is
  run once so the jobs endpoints have a summary, a schedule, a finished run and its attempt to
  show; generated job ids never name it (no generated run starts a task). It is removed at the
  end.
- No agent is ever drained (nothing undoes it): generated drains naming a real agent are
  skipped.
- POST /cluster/v1/masters is sent only with bodies the server must refuse: adding a master
  that cannot be reached makes a single-node cluster lose its quorum for good (a server bug,
  reported with this file), so the runner never sends an acceptable one.
"""
import json
import pathlib
import shlex
import re
import sys
import time

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, reject, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

REPO = pathlib.Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "docs" / "openapi.json"
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
REQUEST_TIMEOUT_S = 20
PROBE_ID = "/schemathesis/probe"
TARGET_ID = "/schemathesis/target"
WAITING_ID = "/schemathesis/waiting"
JOB_ID = "schemathesis.probe"
INSTANCES_MAX = 10_000  # crates/core/src/services/app.rs INSTANCES_MAX: larger is refused (422)

if len(sys.argv) not in (3, 4):
    sys.exit(__doc__.split("\n\n")[1])
BASE_URL = sys.argv[1].rstrip("/")
TOKEN = sys.argv[2]
MAX_EXAMPLES = int(sys.argv[3]) if len(sys.argv) == 4 else 25
# A connection per request: a pooled one left idle past the server's keep-alive timeout
# (30 s) can be closed just as it is reused, and that race is not what is tested here.
AUTH = {"Authorization": f"Bearer {TOKEN}", "Connection": "close"}

session = requests.Session()
schema = schemathesis.openapi.from_path(SCHEMA_PATH)


# --- the cluster state a refused write must not change -------------------------------------------


def snapshot():
    state = {}
    for path in ("/v2/apps", "/v2/deployments"):
        response = session.get(BASE_URL + path, headers=AUTH, timeout=REQUEST_TIMEOUT_S)
        state[path] = (response.status_code, response.json() if response.ok else response.text)
    return state


BEFORE = {"state": None}


@schemathesis.check
def state_unchanged_after_refusal(ctx, response, case):
    """A refused write (4xx to POST/PUT/PATCH/DELETE) leaves /v2/apps and /v2/deployments as they were."""
    if case.method.upper() not in MUTATING or not 400 <= response.status_code < 500:
        return None
    before, after = BEFORE["state"], snapshot()
    if before != after:
        changed = [p for p in after if after[p] != before[p]]
        raise AssertionError(
            f"the cluster state changed although the request was refused with {response.status_code}: "
            f"{', '.join(changed)} differ\n  before: {json.dumps(before)[:1500]}\n  after:  {json.dumps(after)[:1500]}"
        )
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    state_unchanged_after_refusal,
]


# --- what generated requests may not do ------------------------------------------------------------


@schemathesis.hook  # global: Case.call dispatches before_call through the global hooks only
def before_call(context, case, kwargs):
    """Generated apps never launch tasks: instances becomes 0 unless it is out of range (in a
    posted group, in every app of the tree; a group's scaleBy becomes 0)."""
    if case.method.upper() not in ("POST", "PUT", "PATCH"):
        return
    body = case.body
    if not isinstance(body, dict):
        return
    if case.operation.path in ("/v2/apps", "/v2/apps/{id}"):
        idle(body)
    elif case.operation.path in ("/v2/groups", "/v2/groups/{id}"):
        idle_tree(body)


def idle(app):
    instances = app.get("instances")
    if "instances" not in app or (type(instances) is int and 0 < instances <= INSTANCES_MAX):
        app["instances"] = 0


def idle_tree(group):
    apps, groups = group.get("apps"), group.get("groups")
    for app in apps if isinstance(apps, list) else []:
        if isinstance(app, dict):
            idle(app)
    for sub in groups if isinstance(groups, list) else []:
        if isinstance(sub, dict):
            idle_tree(sub)


def would_add_a_master(body):
    """True for a body `add_master` (src/master/http.rs) accepts; see the module's doc."""
    if not isinstance(body, dict) or set(body) != {"id", "url"}:
        return False
    node_id, url = body["id"], body["url"]
    if type(node_id) is not int or not 1 <= node_id < 2**64 or not isinstance(url, str):
        return False
    if not url.startswith("https://"):
        return False
    authority = url[len("https://"):].rstrip("/")
    return bool(authority) and "/" not in authority and "?" not in authority


# --- running and reporting ------------------------------------------------------------------------

failures = []  # (kind, operation label, one-line summary, detail text)
cases_sent = 0
statuses = {}  # operation label -> {status: count}


def curl_of(request):
    parts = ["curl", "-sS", "-i", "-X", request.method, request.url]
    for name, value in request.headers.items():
        if name.lower() == "authorization":
            parts += ["-H", "Authorization: Bearer $TOKEN"]
        elif name.lower() == "content-type":
            parts += ["-H", f"{name}: {value}"]
    command = " ".join(shlex.quote(p) for p in parts)
    command = command.replace("'Authorization: Bearer $TOKEN'", '"Authorization: Bearer $TOKEN"')
    body = request.body
    if body is not None:
        if isinstance(body, bytes):
            body = body.decode("utf-8", "backslashreplace")
        command += " --data-binary " + shlex.quote(body)
    return command


def record(kind, label, summary, request, response, reason):
    lines = [f"{label}: {summary}"]
    if request is not None:
        body = request.body
        if isinstance(body, bytes):
            body = body.decode("utf-8", "backslashreplace")
        lines.append(f"  request:  {request.method} {request.url}")
        if body is not None:
            lines.append(f"  body:     {body[:2000]}")
    if response is not None:
        text = response.content.decode("utf-8", "backslashreplace")
        content_type = response.headers.get("content-type") or ""
        if isinstance(content_type, list):
            content_type = ", ".join(content_type)
        lines.append(f"  response: {response.status_code} {content_type} {text[:1500]}")
    lines.append("  reason:   " + reason.strip().replace("\n", "\n            "))
    if request is not None:
        lines.append(f"  repeat:   {curl_of(request)}")
    failures.append((kind, label, summary, "\n".join(lines)))


def normalize_app_id(app_id):
    """crates/core/src/services/app.rs normalize_app_id."""
    app_id = app_id.strip().rstrip("/")
    return app_id if app_id.startswith("/") else "/" + app_id


PROTECTED_APPS = {PROBE_ID, WAITING_ID}
# Writes that would change or stop the known apps (their tasks, their lock).
PROTECTED_OPERATIONS = {
    "PUT /v2/apps/{id}",
    "PATCH /v2/apps/{id}",
    "DELETE /v2/apps/{id}",
    "DELETE /v2/apps/{id}/tasks",
    "DELETE /v2/apps/{id}/tasks/{taskId}",
    "POST /v2/apps/{id}/restart",
    "DELETE /v2/queue/{id}/delay",
}
# Never called: an event stream does not end.
SKIPPED_OPERATIONS = {"GET /v2/events", "GET /cluster/v1/events"}
AGENT_IDS = set()


def run_case(case, label):
    global cases_sent
    if label == "POST /cluster/v1/masters" and would_add_a_master(case.body):
        reject()
    app_id = (case.path_parameters or {}).get("id")
    if label in PROTECTED_OPERATIONS and isinstance(app_id, str):
        if normalize_app_id(app_id) in PROTECTED_APPS:
            reject()
    # A group change or removal reaches every app inside: never one holding the runner's apps.
    if label in ("PUT /v2/groups/{id}", "DELETE /v2/groups/{id}") and isinstance(app_id, str):
        group = normalize_app_id(app_id)
        if group == "/" or any(p == group or p.startswith(group + "/") for p in PROTECTED_APPS):
            reject()
    # A scale changes running apps (possibly the runner's own, through an id the server reads
    # as an ancestor): tested with marathon-python instead.
    if label == "PUT /v2/groups/{id}" and isinstance(case.body, dict) and "scaleBy" in case.body:
        reject()
    if label == "POST /cluster/v1/agents/{id}/drain" and str(app_id) in AGENT_IDS:
        reject()
    # `/v2/groups/<id>/versions[/<version>]` are a group's versions (documented on their own),
    # as in Marathon, not a group named `versions`.
    if label.startswith(("GET /v2/groups/{id}", "PUT /v2/groups/{id}", "DELETE /v2/groups/{id}")) \
            and isinstance(app_id, str) and re.search(r"(^|/)versions(/[^/]*)?/*$", app_id):
        reject()
    if case.method.upper() in MUTATING:
        BEFORE["state"] = snapshot()
    cases_sent += 1
    try:
        response = case.call(base_url=BASE_URL, session=session, headers=AUTH, timeout=REQUEST_TIMEOUT_S)
    except requests.RequestException as error:
        request = getattr(error, "request", None)
        record("no_response", label, f"no response ({type(error).__name__})", request, None, str(error))
        return
    tally = statuses.setdefault(label, {})
    tally[response.status_code] = tally.get(response.status_code, 0) + 1
    try:
        case.validate_response(response, checks=CHECKS, headers=AUTH)
    except FailureGroup as group:
        for failure in group.exceptions:
            kind = f"{type(failure).__name__}"
            record(kind, label, failure.title, response.request, response, failure.message)


def has_something_to_violate(operation):
    raw = operation.definition.raw
    return bool(raw.get("parameters") or raw.get("requestBody"))


def run_operation(operation, mode, path_parameters=None, examples=False, max_examples=None):
    label = f"{operation.method.upper()} {operation.path}"
    options = {"generation_mode": mode, "path_parameters": path_parameters}
    if examples:  # the request body documented as the example, the rest generated
        options["body"] = operation.definition.raw["requestBody"]["content"]["application/json"]["example"]
    strategy = operation.as_strategy(**options)

    limit, sent = max_examples or MAX_EXAMPLES, [0]

    @settings(
        max_examples=limit,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
    )
    @given(case=strategy)
    def test(case):
        # Hypothesis may replay a small search space (a fixed example) past max_examples.
        if sent[0] < limit:
            before = cases_sent
            run_case(case, label)
            sent[0] += cases_sent - before

    test()


def list_app_ids():
    response = session.get(BASE_URL + "/v2/apps", headers=AUTH, timeout=REQUEST_TIMEOUT_S)
    response.raise_for_status()
    return {app["id"] for app in response.json()["apps"]}


def create_app(definition):
    response = session.post(BASE_URL + "/v2/apps", headers={**AUTH, "Content-Type": "application/json"},
                            data=json.dumps(definition), timeout=REQUEST_TIMEOUT_S)
    if response.status_code not in (201, 409):
        print(f"warning: could not create {definition['id']}: {response.status_code} {response.text}", file=sys.stderr)
        return False
    return True


def start_probe():
    """One app with a real running task, for the task endpoints' shapes."""
    if not create_app({"id": PROBE_ID, "cmd": "sleep 3600", "cpus": 0.1, "mem": 16, "instances": 1,
                       "portDefinitions": [{"port": 0, "name": "probe"}]}):
        return
    deadline = time.time() + 30
    while time.time() < deadline:
        app = session.get(BASE_URL + "/v2/apps" + PROBE_ID, headers=AUTH, timeout=REQUEST_TIMEOUT_S).json().get("app", {})
        if app.get("tasksRunning") == 1 and not app.get("deployments"):
            return
        time.sleep(0.25)
    print(f"warning: {PROBE_ID} has no running task after 30 s; task shapes go unchecked", file=sys.stderr)


def start_job_probe():
    """One job with a finished run (created through Metronome's API, run once through ours),
    for the shapes of /cluster/v1/jobs and /cluster/v1/jobs/{id}. False if it could not be made."""
    job = {"id": JOB_ID, "run": {"cmd": "echo schemathesis", "cpus": 0.1, "mem": 16, "disk": 0},
           "schedules": [{"id": "yearly", "cron": "0 0 1 1 *", "concurrencyPolicy": "FORBID"}]}
    json_headers = {**AUTH, "Content-Type": "application/json"}
    response = session.post(BASE_URL + "/v1/jobs", headers=json_headers, data=json.dumps(job),
                            timeout=REQUEST_TIMEOUT_S)
    if response.status_code not in (201, 409):
        print(f"warning: could not create job {JOB_ID}: {response.status_code} {response.text}", file=sys.stderr)
        return False
    response = session.post(BASE_URL + f"/cluster/v1/jobs/{JOB_ID}/runs", headers=json_headers, data="{}",
                            timeout=REQUEST_TIMEOUT_S)
    if response.status_code != 201:
        print(f"warning: could not start a run of {JOB_ID}: {response.status_code} {response.text}", file=sys.stderr)
        return True
    deadline = time.time() + 30
    while time.time() < deadline:
        record = session.get(BASE_URL + f"/cluster/v1/jobs/{JOB_ID}", headers=AUTH, timeout=REQUEST_TIMEOUT_S).json()
        if record.get("lastRun") and not record.get("activeRuns"):
            return True
        time.sleep(0.25)
    print(f"warning: the run of {JOB_ID} has not finished after 30 s; finished runs go unchecked", file=sys.stderr)
    return True


def main():
    started = time.time()
    apps_before = list_app_ids()
    start_probe()
    job_made = start_job_probe()
    # An app that can never be placed (the whole agent's cpus while the probe holds some): a
    # deployment that stays, so GET /v2/deployments has an item to check, and nothing moves.
    agents = session.get(BASE_URL + "/cluster/v1/nodes", headers=AUTH, timeout=REQUEST_TIMEOUT_S).json()["agents"]
    AGENT_IDS.update(agent["id"] for agent in agents)
    largest = max((agent["cpus"] for agent in agents), default=1)
    create_app({"id": WAITING_ID, "cmd": "sleep 3600", "cpus": largest, "mem": 16, "instances": 1})
    operations = []
    for result in schema.get_all_operations():
        operations.append(result.ok())
    by_label = {f"{op.method.upper()} {op.path}": op for op in operations}
    exercised = set()

    def run(label, modes, **options):
        operation = by_label[label]
        before = cases_sent
        for mode in modes:
            try:
                run_operation(operation, mode, **options)
            except Exception as error:  # generation itself failed: report, go on
                record("generation_error", label, f"{mode.value} generation failed", None, None, repr(error))
        if cases_sent > before:
            exercised.add(label)
        return cases_sent - before

    # 1. Every operation from its schema alone.
    for label, operation in by_label.items():
        if label in SKIPPED_OPERATIONS:
            continue
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
        if label == "POST /cluster/v1/masters":
            modes = [GenerationMode.NEGATIVE]  # an accepted body would break the cluster
        if not has_something_to_violate(operation):
            modes = [GenerationMode.POSITIVE]
        sent = run(label, modes)
        print(f"  {label}: {sent} cases", file=sys.stderr)

    # 2. Against things that exist (random ids never name one): the documented example app
    #    (201, then 409 for the duplicate), the probe's app and tasks, changes to and removal of
    #    an idle app, and removing the (active, undrained) agent, which must be refused. The
    #    agent is never drained: nothing undoes that.
    positive, both = [GenerationMode.POSITIVE], [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    seeded = [run("POST /v2/apps", positive, examples=True, max_examples=2)]
    for app_id in (PROBE_ID, WAITING_ID):
        seeded.append(run("GET /v2/apps/{id}", positive, path_parameters={"id": app_id}, max_examples=3))
        seeded.append(run("GET /v2/apps/{id}/tasks", positive, path_parameters={"id": app_id}, max_examples=3))
        seeded.append(run("GET /v2/apps/{id}/versions", positive, path_parameters={"id": app_id}, max_examples=2))
        seeded.append(run("GET /cluster/v1/placement/{id}", positive, path_parameters={"id": app_id}, max_examples=2))
    if create_app({"id": TARGET_ID, "cmd": "sleep 3600", "cpus": 0.1, "mem": 16, "instances": 0}):
        seeded.append(run("PUT /v2/apps/{id}", both, path_parameters={"id": TARGET_ID}))
        seeded.append(run("PUT /v2/apps/{id}", positive, path_parameters={"id": TARGET_ID}, examples=True, max_examples=1))
        seeded.append(run("DELETE /v2/apps/{id}", positive, path_parameters={"id": TARGET_ID}))
    for agent in agents:
        seeded.append(run("DELETE /cluster/v1/agents/{id}", positive, path_parameters={"id": agent["id"]}, max_examples=1))
    if job_made:
        seeded.append(run("GET /cluster/v1/jobs/{id}", positive, path_parameters={"id": JOB_ID}, max_examples=1))
    print(f"  against existing apps, agents and a job: {sum(seeded)} cases", file=sys.stderr)
    for label in by_label:
        if label in SKIPPED_OPERATIONS:
            continue
        tally = " ".join(f"{code}x{n}" for code, n in sorted(statuses.get(label, {}).items()))
        print(f"  {label}: {tally}", file=sys.stderr)

    # Leave the cluster as it was: remove every app the run created, and its job.
    for app_id in sorted(list_app_ids() - apps_before):
        session.delete(BASE_URL + "/v2/apps" + app_id, headers=AUTH, timeout=REQUEST_TIMEOUT_S)
    if job_made:
        session.delete(BASE_URL + f"/v1/jobs/{JOB_ID}?stopCurrentJobRuns=true", headers=AUTH, timeout=REQUEST_TIMEOUT_S)

    by_kind = {}
    for kind, label, summary, detail in failures:
        by_kind.setdefault((label, kind, summary), []).append(detail)
    for (label, kind, summary), details in sorted(by_kind.items()):
        print(f"\n=== {label} — {kind}: {summary} ({len(details)}x)")
        for detail in details:
            print(detail)
    print(f"\n({time.time() - started:.0f} s)", file=sys.stderr)
    print(f"schemathesis: {cases_sent} cases over {len(exercised)} operations, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
