"""marathon-python (PyPI `marathon`) against a dcos-rs master, as a Marathon user drives it:
every call below goes through the client's strict models, which refuse any key they do not
know, so a call that returns is a response that parsed. Then the raw HTTP details its models
do not show (status codes, headers, error bodies, the DC/OS path prefix).

Usage: marathon_python.py <master-url> <token>: the token goes as DC/OS's
`Authorization: token=<token>` (marathon-python's `auth_token`). Exits non-zero, naming the
call, on the first failure.

Not covered yet: what the services issue adds later (queue, events, health checks run).
"""
import collections
import collections.abc
import json
import sys
import time
import urllib.error
import urllib.request

import marathon
from marathon.models import MarathonApp, MarathonDeployment, MarathonTask

# marathon-python 0.13 encodes nested objects with `collections.Iterable`, gone since Python
# 3.10: its users on a current Python need this line too (a client bug, not the server's).
collections.Iterable = collections.abc.Iterable

URL, TOKEN = sys.argv[1], sys.argv[2]
client = marathon.MarathonClient(URL, auth_token=TOKEN)


def check(name, condition, detail):
    if not condition:
        sys.exit(f"{name}: {detail}")


def wait(name, condition, seconds=30):
    deadline = time.time() + seconds
    while True:
        result = condition()
        if result:
            return result
        check(name, time.time() < deadline, f"not true after {seconds} s")
        time.sleep(0.2)


def iso(value):
    """A time as the API writes it; marathon-python turns some into datetimes."""
    if isinstance(value, str):
        return value
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def converged(app_id, instances):
    def done():
        app = client.get_app(app_id)
        return app if app.tasks_running == instances and not app.deployments else None
    return done


def http(method, path, body=None, headers=None):
    """(status, headers, parsed body or text) of a raw request."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(URL + path, data=data, method=method)
    request.add_header("Authorization", f"token={TOKEN}")
    request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request) as response:
            status, head, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, head, raw = error.code, error.headers, error.read()
    try:
        return status, head, json.loads(raw)
    except ValueError:
        return status, head, raw.decode()


# --- info, leader, ping
info = client.get_info()
check("get_info", info.name == "dcos-rs" and info.elected is True, vars(info))
leader = client.get_leader()
check("get_leader", "://" not in leader["leader"] and ":" in leader["leader"], leader)
check("ping", client.ping().strip() == b"pong", client.ping())

# --- events: marathon-python's own event_stream, read in a thread while an app deploys
import queue as queue_module
import threading

received = queue_module.Queue()


def listen():
    kinds = ["api_post_event", "deployment_info", "status_update_event",
             "deployment_step_success", "deployment_success", "event_stream_attached"]
    # marathon-python's event_stream sends no auth_token (only username/password): HTTP Basic with the
    # token as password is how its users authenticate the stream.
    streaming = marathon.MarathonClient(URL, username="dcos", password=TOKEN)
    for ev in streaming.event_stream(event_types=kinds):
        received.put(ev)


threading.Thread(target=listen, daemon=True).start()
first = received.get(timeout=10)
check("event_stream_attached", first.event_type == "event_stream_attached", vars(first))
client.create_app("/py/events", MarathonApp(cmd="sleep 1000", cpus=0.1, mem=16, instances=1))
seen = []
deadline = time.time() + 30
while not any(e.event_type == "deployment_success" for e in seen):
    check("events", time.time() < deadline, [e.event_type for e in seen])
    ev = received.get(timeout=30)
    if getattr(ev, "app_id", None) in (None, "/py/events") or ev.event_type.startswith("deployment"):
        seen.append(ev)
kinds = [e.event_type for e in seen]
check("event order", kinds[0] == "api_post_event" and kinds[1] == "deployment_info"
      and kinds[-2:] == ["deployment_step_success", "deployment_success"], kinds)
statuses = [e.task_status for e in seen if e.event_type == "status_update_event"]
check("status events", statuses[0] == "TASK_STAGING" and statuses[-1] == "TASK_RUNNING", statuses)
plan_id = seen[1].plan.id
check("deployment ids", seen[-1].id == plan_id, (plan_id, vars(seen[-1])))
client.delete_app("/py/events")

# --- create, list with filters and embeds
web = client.create_app(
    "/py/web",
    MarathonApp(cmd="sleep 1000", cpus=0.1, mem=16, instances=1, labels={"tier": "web"}),
)
check("create_app", web.id == "/py/web" and web.instances == 1, vars(web))
check("create_app deployments", len(web.deployments) == 1, web.deployments)
check("create_app version", web.version.endswith("Z") and "." in web.version, web.version)
check("create_app defaults", web.upgrade_strategy.minimum_health_capacity == 1
      and web.backoff_factor == 1.15 and web.health_checks == [], vars(web))
client.create_app(
    "/py/db", MarathonApp(cmd="sleep 1001", cpus=0.1, mem=16, instances=1, labels={"tier": "db"})
)
app = wait("get_app running", converged("/py/web", 1))
check("get_app tasks embedded", len(app.tasks) == 1 and isinstance(app.tasks[0], MarathonTask), app.tasks)
check("get_app versionInfo", iso(app.version_info.last_config_change_at) == web.version, vars(app.version_info))
wait("db running", converged("/py/db", 1))

check("list_apps", sorted(a.id for a in client.list_apps()) == ["/py/db", "/py/web"], "ids")
check("list_apps label", [a.id for a in client.list_apps(label="tier==web")] == ["/py/web"], "label==")
check("list_apps label in", len(client.list_apps(label="tier in (web, db)")) == 2, "label in")
check("list_apps id", [a.id for a in client.list_apps(app_id="py/d")] == ["/py/db"], "id filter")
check("list_apps cmd", [a.id for a in client.list_apps(cmd="sleep 1001")] == ["/py/db"], "cmd filter")
embedded = client.list_apps(embed_tasks=True)
check("list_apps embed tasks", all(len(a.tasks) == 1 for a in embedded), [a.tasks for a in embedded])
check("list_apps no embed", all(not a.tasks for a in client.list_apps()), "tasks without embed")

tasks = client.list_tasks()
check("list_tasks", sorted(t.app_id for t in tasks) == ["/py/db", "/py/web"], [vars(t) for t in tasks])
check("list_tasks state", all(t.state == "TASK_RUNNING" and t.started_at for t in tasks), "running")
check("list_tasks(app)", len(client.list_tasks(app_id="/py/web")) == 1, "tasks of /py/web")

# --- scale, versions, update with what was read, rollback, restart
first_version = iso(client.get_app("/py/web").version)
scaled = client.scale_app("/py/web", 2)
check("scale_app", "deploymentId" in scaled and "version" in scaled, scaled)
app = wait("scaled", converged("/py/web", 2))
check("scale versionInfo", iso(app.version_info.last_scaling_at) == scaled["version"]
      and iso(app.version_info.last_config_change_at) == first_version, vars(app.version_info))
versions = client.list_versions("/py/web")
check("list_versions", versions[:2] == [scaled["version"], first_version], versions)
old = client.get_version("/py/web", first_version)
check("get_version", old.instances == 1 and iso(old.version) == first_version, vars(old))

before = {t.id for t in client.get_app("/py/web").tasks}
app.cmd = "sleep 1002"
updated = client.update_app("/py/web", app)  # the object read back, read-only fields and all
check("update_app", "deploymentId" in updated, updated)
app = wait("updated", converged("/py/web", 2))
check("update_app replaced tasks", app.cmd == "sleep 1002" and not before & {t.id for t in app.tasks},
      [t.id for t in app.tasks])

rolled = client.rollback_app("/py/web", first_version)
check("rollback_app", "deploymentId" in rolled, rolled)
app = wait("rolled back", converged("/py/web", 1))
check("rollback_app definition", app.cmd == "sleep 1000" and app.instances == 1, vars(app))

before = {t.id for t in app.tasks}
restarted = client.restart_app("/py/web")
check("restart_app", "deploymentId" in restarted, restarted)
app = wait("restarted", converged("/py/web", 1))
check("restart_app replaced", not before & {t.id for t in app.tasks}, [t.id for t in app.tasks])
check("restart versionInfo", iso(app.version_info.last_config_change_at) == restarted["version"]
      and iso(app.version_info.last_scaling_at) != restarted["version"], vars(app.version_info))

# --- a rolling upgrade of 5 instances with minimumHealthCapacity 1 and no room above: never
# fewer than 5 running, sampled every 100 ms (an app without health checks is healthy when
# its tasks run)
from marathon.models.app import MarathonUpgradeStrategy
client.create_app("/py/rolling", MarathonApp(
    cmd="sleep 1000", cpus=0.1, mem=16, instances=5,
    upgrade_strategy=MarathonUpgradeStrategy(minimum_health_capacity=1, maximum_over_capacity=0)))
wait("rolling running", converged("/py/rolling", 5))
before = {t.id for t in client.get_app("/py/rolling").tasks}
update = client.update_app("/py/rolling", MarathonApp(cmd="sleep 1001"))
samples, most = [], 0
deadline = time.time() + 60
while True:
    current = client.get_app("/py/rolling")
    samples.append(current.tasks_running)
    most = max(most, len(current.tasks))
    if not current.deployments and current.tasks_running == 5:
        break
    check("rolling upgrade", time.time() < deadline, samples[-20:])
    time.sleep(0.1)
after = {t.id for t in current.tasks}
check("rolling kept 5 running", min(samples) >= 5, samples)
check("rolling replaced all", not before & after and len(after) == 5, (before, after))
check("rolling stayed within 6 tasks", most <= 6, most)
client.delete_app("/py/rolling")

# --- readiness: the deployment waits for it, and its results parse in the client's models
status, _, body = http("POST", "/v2/apps", {
    "id": "/py/ready", "cpus": 0.1, "mem": 64,
    "cmd": "python3 -m http.server $PORT0 --bind 127.0.0.1 & sleep 2; echo ok > ready; wait",
    "portDefinitions": [{"port": 0, "name": "http-api"}],
    "readinessChecks": [{"path": "/ready", "intervalSeconds": 2, "timeoutSeconds": 1,
                         "preserveLastResponse": True}]})
check("POST readiness app", status == 201, (status, body))


def readiness_in_deployment():
    for deployment in client.list_deployments():
        for action in deployment.current_actions:
            if action.app == "/py/ready" and action.readiness_check_results:
                return action.readiness_check_results
    return None


results = wait("readiness results in the deployment", readiness_in_deployment)
check("readiness not ready yet", results[0]["ready"] is False, results)
wait("readiness app deployed", converged("/py/ready", 1))
ready_app = client.get_app("/py/ready", embed_readiness=True)
results = ready_app.readiness_check_results
check("embed_readiness", results[0]["ready"] is True and results[0]["lastResponse"]["status"] == 200, results)
client.delete_app("/py/ready")

# --- a group with dependencies deploys in order: web starts only once db runs
from marathon.models.group import MarathonGroup
created = client.create_group(MarathonGroup(id="/py/shop", apps=[
    MarathonApp(id="web", cmd="sleep 1000", cpus=0.1, mem=16, instances=2, dependencies=["db"]),
    MarathonApp(id="db", cmd="sleep 1001", cpus=0.1, mem=16, instances=1),
]))
check("create_group", "deploymentId" in created, created)
web = wait("web running", converged("/py/shop/web", 2))
db = client.get_app("/py/shop/db")
db_started = max(iso(t.started_at) for t in db.tasks)
check("dependency order", all(iso(t.staged_at) >= db_started for t in web.tasks),
      (db_started, [iso(t.staged_at) for t in web.tasks]))
group = client.get_group("/py/shop")
check("get_group", sorted(a.id for a in group.apps) == ["/py/shop/db", "/py/shop/web"], vars(group))
root_groups = client.list_groups()
check("list_groups", any(g.id == "/py" for g in root_groups), [g.id for g in root_groups])
status, _, body = http("PUT", "/v2/groups/py/shop?dryRun=true", {"scaleBy": 2})
check("dryRun", status == 200 and [s["actions"][0]["action"] for s in body["steps"]]
      == ["ScaleApplication", "ScaleApplication"], (status, body))
scaled = client.scale_group("/py/shop", 2)
check("scale_group", "deploymentId" in scaled, scaled)
wait("scaled group", converged("/py/shop/web", 4))
check("scale_group db", client.get_app("/py/shop/db").instances == 2, "db instances")
# group versions: listed newest first, one shown as it was, and a rollback to it (what came
# after it goes)
status, _, versions = http("GET", "/v2/groups/py/shop/versions")
check("group versions", status == 200 and len(versions) >= 2
      and versions == sorted(versions, reverse=True), (status, versions))
first = versions[-1]
status, _, then = http("GET", "/v2/groups/py/shop/versions/" + first)
check("group version", status == 200 and sorted((a["id"], a["instances"]) for a in then["apps"])
      == [("/py/shop/db", 1), ("/py/shop/web", 2)], (status, then))
parsed = MarathonGroup.from_json(then)
check("group version parses", sorted(a.id for a in parsed.apps) == ["/py/shop/db", "/py/shop/web"], vars(parsed))
status, _, body = http("GET", "/v2/groups/py/shop/versions/2001-01-01T00:00:00.000Z")
check("unknown group version", status == 404 and "versions lists them" in body["message"], (status, body))
client.create_app("/py/shop/extra", MarathonApp(cmd="sleep 1000", cpus=0.1, mem=16, instances=1))
rolled = client.rollback_group("/py/shop", first, force=True)
check("rollback_group", "deploymentId" in rolled and "version" in rolled, rolled)
wait("group rolled back", converged("/py/shop/web", 2))
check("rollback_group db", client.get_app("/py/shop/db").instances == 1, "db instances")
status, _, _ = http("GET", "/v2/apps/py/shop/extra")
check("rollback_group removed what came after", status == 404, status)
status, _, body = http("POST", "/v2/groups", {"id": "/py/loop", "apps": [
    {"id": "a", "cmd": "x", "dependencies": ["b"]}, {"id": "b", "cmd": "x", "dependencies": ["a"]}]})
check("cycle refused", status == 422 and "cycle" in body["message"], (status, body))
status, _, body = http("POST", "/v2/groups", {"id": "/py/shop"})
check("group exists", status == 409, (status, body))
deleted = client.delete_group("/py/shop")
check("delete_group", "deploymentId" in deleted, deleted)
try:
    client.get_app("/py/shop/web")
    sys.exit("the group's apps are still there")
except marathon.exceptions.NotFoundError:
    pass

# --- health checks run beside the task: a healthy one is counted and reported, a failing
# one is killed and replaced
from marathon.models.app import MarathonHealthCheck, PortDefinition


def served(app_id, path, grace):
    return MarathonApp(
        cmd="exec python3 -m http.server $PORT0 --bind 127.0.0.1", cpus=0.1, mem=128, instances=1,
        port_definitions=[PortDefinition(port=0)],
        health_checks=[MarathonHealthCheck(protocol="HTTP", path=path, port_index=0, grace_period_seconds=grace,
                                           interval_seconds=1, timeout_seconds=1, max_consecutive_failures=2,
                                           delay_seconds=0)])


client.create_app("/py/healthy", served("/py/healthy", "/", 30))
healthy = wait("healthy", lambda: (lambda a: a if a.tasks_healthy == 1 and not a.deployments else None)(client.get_app("/py/healthy")))
results = healthy.tasks[0].health_check_results
check("healthCheckResults", len(results) == 1 and results[0].alive is True
      and results[0].consecutive_failures == 0, [vars(r) for r in results])
client.create_app("/py/sick", served("/py/sick", "/missing", 0))
first = wait("sick started", lambda: [t.id for t in client.list_tasks(app_id="/py/sick")])[0]
def replaced():
    current = client.get_app("/py/sick")
    ids = {t.id for t in current.tasks}
    return current if ids and first not in ids else None
sick = wait("sick replaced", replaced, seconds=40)
check("sick unhealthy", sick.tasks_healthy == 0, vars(sick))
client.delete_app("/py/healthy")
client.delete_app("/py/sick")

# --- constraints: one agent here, so a second instance UNIQUE per host waits, and says why
client.create_app("/py/unique", MarathonApp(cmd="sleep 1000", cpus=0.1, mem=16, instances=2,
                                             constraints=[["hostname", "UNIQUE"]]))
# (The first instance is recorded a moment after the round that placed it: wait for it.)
item = wait("unique queued", lambda: [q for q in client.list_queue() if q.app.id == "/py/unique"
                                      and q.processed_offers_summary["processedOffersCount"] > 0
                                      and q.count == 1])[0]
rows = {r["reason"]: r for r in item.processed_offers_summary["rejectSummaryLastOffers"]}
check("constraint reason", rows["UnfulfilledConstraint"]["declined"] == 1 and item.count == 1, rows)
check("one placed", client.get_app("/py/unique").tasks_running <= 1, "UNIQUE")
client.delete_app("/py/unique", force=True)

# --- kills
task = app.tasks[0]
killed = client.kill_task("/py/web", task.id)
check("kill_task", isinstance(killed, MarathonTask) and killed.id == task.id, killed)
app = wait("replaced after kill", lambda: (lambda a: a if a.tasks_running == 1 and task.id not in {t.id for t in a.tasks if t.state == "TASK_RUNNING"} else None)(client.get_app("/py/web")))
killed = client.kill_tasks("/py/web", scale=True)
check("kill_tasks scale", "deploymentId" in killed, killed)
check("kill_tasks scaled to 0", client.get_app("/py/web").instances == 0, "instances")
db_tasks = [t.id for t in client.list_tasks(app_id="/py/db")]
client.kill_given_tasks(db_tasks, scale=True)
check("kill_given_tasks", client.get_app("/py/db").instances == 0, "instances of /py/db")

# --- deployments and the lock: an app that cannot be placed stays deploying
status, head, body = http("POST", "/v2/apps?force=true",
                          {"id": "/py/huge", "cmd": "sleep 1", "cpus": 4000, "mem": 16})
check("POST force", status == 201, (status, body))
deployments = client.list_deployments()
check("list_deployments", any(isinstance(d, MarathonDeployment) and d.affected_apps == ["/py/huge"]
                              and d.current_step == 1 and d.steps[0].actions[0].action == "StartApplication"
                              for d in deployments), [vars(d) for d in deployments])
queue = wait("queue summary", lambda: [q for q in client.list_queue(embed_last_unused_offers=True)
                                        if q.app.id == "/py/huge" and q.last_unused_offers])
item = queue[0]
check("list_queue", item.count == 1 and item.delay.overdue is True, vars(item))
rows = {r["reason"]: r for r in item.processed_offers_summary["rejectSummaryLastOffers"]}
check("queue reasons", rows["InsufficientCpus"]["declined"] == 1 and rows["InsufficientCpus"]["processed"] == 1
      and rows["InsufficientMemory"]["processed"] == 0, rows)
check("lastUnusedOffers", item.last_unused_offers[0]["reason"] == ["InsufficientCpus"], item.last_unused_offers)
client.reset_delay("/py/huge")
try:
    client.scale_app("/py/huge", 2)
    sys.exit("scale_app of a locked app: not refused")
except marathon.exceptions.ConflictError:
    pass
check("scale_app force", "deploymentId" in client.scale_app("/py/huge", 0, force=True), "forced")
# A deployment that cannot finish (room for 2 of 40 instances) is rolled back by deleting it.
client.create_app("/py/stuck", MarathonApp(cmd="sleep 1000", cpus=0.1, mem=500, instances=1))
wait("stuck running", converged("/py/stuck", 1))
scaled = client.scale_app("/py/stuck", 40)
stuck = [d for d in client.list_deployments() if d.affected_apps == ["/py/stuck"]]
check("stuck deployment", [d.id for d in stuck] == [scaled["deploymentId"]], [vars(d) for d in stuck])
rolled = client.delete_deployment(scaled["deploymentId"])
check("delete_deployment", "deploymentId" in rolled, rolled)
app = wait("rolled back to 1", converged("/py/stuck", 1))
check("rolled back", app.instances == 1, vars(app))
try:
    client.delete_deployment(scaled["deploymentId"], force=True)
    sys.exit("delete_deployment(force=True): not refused")
except marathon.exceptions.MarathonHttpError as error:
    check("abort refused", error.status_code == 422, vars(error))
client.delete_app("/py/stuck")
# A group whose app is mid-deployment (room for 2 of 40) is held by it: removing it, or
# replacing it with a definition without that app, is refused unless forced.
client.create_group(MarathonGroup(id="/py/held", apps=[
    MarathonApp(id="/py/held/big", cmd="sleep 1000", cpus=0.1, mem=500, instances=40)]))
wait("held deploying", lambda: [d for d in client.list_deployments() if d.affected_apps == ["/py/held/big"]])
for method, body in [("DELETE", None), ("PUT", {"id": "/py/held", "apps": []})]:
    status, _, answer = http(method, "/v2/groups/py/held", body)
    check(f"{method} of a held group", status == 409 and answer["deployments"], (status, answer))
check("held group kept", client.get_app("/py/held/big").instances == 40, "instances")
# PUT .../versions/<not a time> is no rollback of /py/held: it names a group, and the segment
# `versions` is refused in ids (an endpoint of apps and groups).
status, _, answer = http("PUT", "/v2/groups/py/held/versions/v1", {})
check("group named versions/v1", status == 422 and "'versions' is reserved" in answer["message"], (status, answer))
check("delete_group force", "deploymentId" in client.delete_group("/py/held", force=True), "forced")
status, _, _ = http("GET", "/v2/apps/py/held/big")
check("held group removed", status == 404, status)

status, _, body = http("POST", "/v2/apps", {"id": "/py/huge2", "cmd": "sleep 1", "cpus": 4000, "mem": 16})
check("impossible app", status == 422 and body["details"][0]["path"] == "/cpus", (status, body))

# --- raw HTTP: status codes, headers, error bodies, paths
status, head, body = http("POST", "/v2/apps", {"id": "/py/raw", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16,
                                               "instances": 0, "portDefinitions": [{"port": 0}],
                                               "healthChecks": [{"protocol": "TCP"},
                                                                {"protocol": "COMMAND", "command": {"value": "true"}}],
                                               "acceptedResourceRoles": ["*"]})
check("POST 201", status == 201, (status, body))
check("POST Location", head["Location"] == "/v2/apps/py/raw", dict(head))
check("POST Marathon-Deployment-Id", head["Marathon-Deployment-Id"] == body["deployments"][0]["id"], dict(head))
check("POST Warning", "acceptedResourceRoles" in (head.get("Warning") or ""), dict(head))
check("POST healthCheck defaults", body["healthChecks"][0]["gracePeriodSeconds"] == 300
      and body["healthChecks"][0]["portIndex"] == 0, body["healthChecks"])
status, _, body = http("POST", "/v2/apps", {"id": "/py/raw", "cmd": "x"})
check("duplicate POST", status == 409, (status, body))
status, head, body = http("PUT", "/v2/apps/py/put-created", {"cmd": "sleep 1", "mem": 16, "cpus": 0.1, "instances": 0})
check("PUT creates 201", status == 201 and "deploymentId" in body and head["Location"], (status, body))
status, _, body = http("POST", "/v2/apps", {"id": "/py/bad", "cmd": "x", "cpus": -1, "instnaces": 2})
check("422 shape", status == 422 and {d["path"] for d in body["details"]} == {"/instnaces"}, (status, body))
status, _, body = http("POST", "/v2/apps", {"id": "/py/bad", "cmd": "x", "upgradeStrategy": {"minimumHealthCapacity": 2}})
check("422 path", status == 422 and body["details"][0]["path"] == "/upgradeStrategy/minimumHealthCapacity", (status, body))
status, _, body = http("GET", "/marathon/v2/apps/py/raw")
check("DC/OS prefix", status == 200 and body["app"]["id"] == "/py/raw", (status, body))
status, _, body = http("GET", "/v2/apps//py/raw")
check("double slash", status == 200 and body["app"]["id"] == "/py/raw", (status, body))
status, _, body = http("GET", "/v2/apps/py/raw/versions/2001-01-01T00:00:00.000Z")
check("unknown version", status == 404, (status, body))

# --- a heartbeat on an idle stream within 10 s
request = urllib.request.Request(URL + "/v2/events?event_type=deployment_failed")
request.add_header("Authorization", f"token={TOKEN}")
request.add_header("Accept", "text/event-stream")
with urllib.request.urlopen(request, timeout=15) as stream:
    # The filter leaves out even event_stream_attached: the first line is a heartbeat.
    started = time.time()
    line = stream.readline()
    check("heartbeat", line.startswith(b":") and time.time() - started < 10, (line, time.time() - started))

# --- delete
for app_id in ["/py/web", "/py/db", "/py/huge", "/py/raw", "/py/put-created"]:
    deleted = client.delete_app(app_id)
    check("delete_app", "deploymentId" in deleted, deleted)
try:
    client.get_app("/py/web")
    sys.exit("get_app after delete: the app is still there")
except marathon.exceptions.NotFoundError:
    pass
print("marathon-python: every call parsed")
