"""The DC/OS CLI (PyPI `dcoscli` 0.6.1, the last Python one) against a dcos-rs master: its
`dcos marathon ...` commands, run as a user types them, with the cluster's URL and token in
the CLI's own environment variables (DCOS_URL, DCOS_ACS_TOKEN). The CLI reaches Marathon at
<url>/service/marathon/ and sends the token as `Authorization: token=<token>`.

Usage: <python of the CLI's venv> dcos_cli.py <master-url> <token>. The CLI's dependencies
conflict with other test clients, so .ci/run installs it in its own venv (/opt/dcos-cli).
Exits non-zero, naming the command, on the first failure.
"""
import json
import os
import subprocess
import sys
import tempfile
import urllib.parse

from checks import check, wait as wait_up_to

URL, TOKEN = sys.argv[1], sys.argv[2]

# dcoscli 0.6.1 predates Python 3.10, which moved these names to collections.abc: its users
# on a current Python need the same lines (a client bug, not the server's).
SHIM = """
import collections, collections.abc, sys
for name in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable"):
    setattr(collections, name, getattr(collections.abc, name))
from dcoscli.main import main
sys.argv[0] = "dcos"
sys.exit(main())
"""


def wait(name, condition):
    """The CLI's changes converge within a minute."""
    return wait_up_to(name, condition, seconds=60, every=0.5)


HOME = tempfile.mkdtemp(prefix="dcos-cli-")
ENV = dict(
    os.environ,
    HOME=HOME,
    DCOS_DIR=os.path.join(HOME, ".dcos"),
    DCOS_URL=URL,
    DCOS_ACS_TOKEN=TOKEN,
    DCOS_SSL_VERIFY="false",
)


def dcos(*args, stdin=None, ok=True):
    """(exit code, stdout, stderr) of `dcos <args>`; with ok, a failure ends the test."""
    result = subprocess.run(
        [sys.executable, "-c", SHIM, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    name = "dcos " + " ".join(args)
    if ok:
        check(name, result.returncode == 0,
              f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}")
    return result.returncode, result.stdout, result.stderr


def dcos_json(*args):
    return json.loads(dcos(*args)[1])


def app(app_id):
    return dcos_json("marathon", "app", "show", app_id)


def converged(app_id, instances):
    def done():
        shown = app(app_id)
        return shown if (shown["tasksRunning"] == instances and not shown["deployments"]) else None
    return done


def deployment_of(output):
    """The id in the CLI's `Created deployment <id>` (or `Created deployment: <id>`)."""
    check("deployment id", "Created deployment" in output, output)
    return output.split("Created deployment", 1)[1].lstrip(": ").split()[0]


# --- about, ping, leader
about = dcos_json("marathon", "about")
check("about", about["elected"] is True and about["version"], about)
code, out, _ = dcos("marathon", "ping", "--once")
check("ping", out.startswith("Marathon ping response[1x]: pong"), out)

# --- an app from stdin, as `dcos marathon app add < app.json`
definition = {
    "id": "/cli/web",
    "cmd": "sleep 600",
    "cpus": 0.1,
    "mem": 16,
    "instances": 1,
    "labels": {"team": "cli"},
}
_, out, _ = dcos("marathon", "app", "add", stdin=json.dumps(definition))
check("app add", "Created deployment" in out, out)
wait("app add converges", converged("/cli/web", 1))

# Adding it again is refused by the CLI itself, which asks first (GET /v2/apps/cli/web).
code, out, err = dcos("marathon", "app", "add", stdin=json.dumps(definition), ok=False)
check("app add twice", code != 0 and "already exists" in (out + err), (code, out, err))

listed = dcos_json("marathon", "app", "list", "--json")
check("app list --json", [a["id"] for a in listed] == ["/cli/web"], listed)
_, table, _ = dcos("marathon", "app", "list")
check("app list", "/cli/web" in table and "ID" in table, table)
_, quiet, _ = dcos("marathon", "app", "list", "--quiet")
check("app list --quiet", quiet.split() == ["/cli/web"], quiet)

# --- update (properties, as `key=value`), versions, a version shown by its relative number
_, out, _ = dcos("marathon", "app", "update", "/cli/web", "instances=2")
deployment_of(out)
wait("scale converges", converged("/cli/web", 2))
# A change from stdin (the CLI's own `key=value` parsing turns JSON objects into strings).
_, out, _ = dcos("marathon", "app", "update", "/cli/web", stdin=json.dumps({"env": {"COLOR": "blue"}}))
deployment_of(out)
shown = wait("update converges", converged("/cli/web", 2))
check("update", shown["env"] == {"COLOR": "blue"}, shown)
versions = dcos_json("marathon", "app", "version", "list", "/cli/web")
check("version list", len(versions) >= 3 and versions == sorted(versions, reverse=True), versions)
first = dcos_json("marathon", "app", "show", "--app-version=" + versions[-1], "/cli/web")
check("show a version", first["instances"] == 1 and first["env"] == {}, first)
previous = dcos_json("marathon", "app", "show", "--app-version=-1", "/cli/web")
check("show a relative version", previous["version"] == versions[1], previous)

# --- tasks: list, show, kill with scale, stop (then replaced)
tasks = dcos_json("marathon", "task", "list", "--json", "/cli/web")
check("task list --json", len(tasks) == 2 and all(t["appId"] == "/cli/web" for t in tasks), tasks)
_, table, _ = dcos("marathon", "task", "list", "/cli/web")
check("task list", all(t["id"] in table for t in tasks), table)
task = dcos_json("marathon", "task", "show", tasks[0]["id"])
check("task show", task["id"] == tasks[0]["id"] and task["host"], task)

_, out, _ = dcos("marathon", "task", "kill", "--scale", tasks[0]["id"])
deployment_of(out)
wait("killed with scale", converged("/cli/web", 1))
check("kill --scale shrank", app("/cli/web")["instances"] == 1, "instances")

survivor = dcos_json("marathon", "task", "list", "--json", "/cli/web")[0]["id"]
_, out, _ = dcos("marathon", "task", "stop", survivor)
wait("a stopped task is replaced", lambda: [
    t for t in dcos_json("marathon", "task", "list", "--json", "/cli/web")
    if t["id"] != survivor and t["state"] == "TASK_RUNNING"])

# An unknown task is an error the CLI prints, with a non-zero exit.
code, out, err = dcos("marathon", "task", "stop", "cli_web.no-such-task", ok=False)
check("stop an unknown task", code != 0, (code, out, err))

# --- restart, kill, deployments
_, out, _ = dcos("marathon", "app", "restart", "/cli/web")
deployment_of(out)
wait("restart converges", converged("/cli/web", 1))
_, out, _ = dcos("marathon", "app", "kill", "/cli/web")
check("app kill", "Killed tasks" in out, out)
wait("app kill replaced", converged("/cli/web", 1))
check("deployment list --json", isinstance(dcos_json("marathon", "deployment", "list", "--json"), list), "")

# More than any agent holds is refused (422, the reason in the CLI's message) unless forced;
# forced, it is a deployment that cannot finish: listed, blocking an update (409, which the
# CLI words as "Changes blocked"), and rolled back by the CLI.
code, out, err = dcos("marathon", "app", "update", "/cli/web", "cpus=1000", ok=False)
check("impossible update", code != 0 and "more than any agent offers" in (out + err), (out, err))
_, out, _ = dcos("marathon", "app", "update", "--force", "/cli/web", "cpus=1000")
stuck = deployment_of(out)
listed = dcos_json("marathon", "deployment", "list", "--json", "/cli/web")
check("deployment listed", [d["id"] for d in listed] == [stuck], listed)
_, table, _ = dcos("marathon", "deployment", "list", "/cli/web")
check("deployment list", stuck in table, table)
# Why it waits, from the queue: Marathon's processedOffersSummary and, per agent, the reasons.
def declined_for_cpus():
    code, out, _ = dcos("marathon", "debug", "summary", "/cli/web", "--json", ok=False)
    if code != 0:
        return None
    summary = json.loads(out).get("processedOffersSummary", {})
    return [r for r in summary.get("rejectSummaryLastOffers", [])
            if r["reason"] == "InsufficientCpus" and r["declined"] >= 1]


wait("debug summary: declined for cpus", declined_for_cpus)
_, table, _ = dcos("marathon", "debug", "summary", "/cli/web")
check("debug summary table", "CPUS" in table, table)
_, table, _ = dcos("marathon", "debug", "details", "/cli/web")
header, row = table.splitlines()[:2]
details = dict(zip(header.split(), row.split()))
check("debug details", details["CPUS"] == "-" and details["MEM"] == "ok", table)
_, table, _ = dcos("marathon", "debug", "list")
check("debug list", "/cli/web" in table, table)
code, out, err = dcos("marathon", "app", "update", "/cli/web", "instances=3", ok=False)
check("locked app", code != 0 and "Changes blocked" in (out + err), (code, out, err))
rollback = dcos_json("marathon", "deployment", "rollback", stuck)
check("rollback", rollback["deploymentId"] and rollback["version"], rollback)
wait("rolled back", lambda: app("/cli/web")["cpus"] == 0.1 and not app("/cli/web")["deployments"])

# stop (instances=0) then start
_, out, _ = dcos("marathon", "app", "stop", "/cli/web")
deployment_of(out)
wait("stopped", converged("/cli/web", 0))
_, out, _ = dcos("marathon", "app", "start", "/cli/web", "1")
deployment_of(out)
wait("started", converged("/cli/web", 1))

# An invalid definition: the server's 422 reaches the user as a message, exit non-zero.
code, out, err = dcos("marathon", "app", "update", "/cli/web", "mem=-5", ok=False)
check("invalid update", code != 0 and "mem" in (out + err), (code, out, err))

dcos("marathon", "app", "remove", "/cli/web")
wait("removed", lambda: dcos_json("marathon", "app", "list", "--json") == [])

# --- groups: add, list, show, scale, update, remove
group = {
    "id": "/cli-group",
    "apps": [{"id": "api", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 1}],
}
_, out, _ = dcos("marathon", "group", "add", stdin=json.dumps(group))
check("group add", "Created deployment" in out, out)
wait("group converges", converged("/cli-group/api", 1))
groups = dcos_json("marathon", "group", "list", "--json")
check("group list --json", any(g["id"] == "/cli-group" for g in groups), groups)
_, table, _ = dcos("marathon", "group", "list")
check("group list", "/cli-group" in table, table)
shown = dcos_json("marathon", "group", "show", "/cli-group")
check("group show", [a["id"] for a in shown["apps"]] == ["/cli-group/api"], shown)
_, out, _ = dcos("marathon", "group", "scale", "/cli-group", "2")
deployment_of(out)
wait("group scaled", converged("/cli-group/api", 2))
dcos("marathon", "group", "remove", "/cli-group")
wait("group removed", lambda: dcos_json("marathon", "app", "list", "--json") == [])

# --- who leads, through DC/OS's Mesos-DNS names; ping once per master
leader = dcos_json("marathon", "leader", "show", "--json")
host = urllib.parse.urlparse(URL).hostname
check("leader show", leader == {"host": "marathon.mesos.", "ip": host}, leader)
_, table, _ = dcos("marathon", "leader", "show")
check("leader show table", host in table, table)
_, out, _ = dcos("marathon", "ping")
check("ping every master", out.startswith("Marathon ping response[1x]: pong"), out)

print("dcos-cli: every command passed")
